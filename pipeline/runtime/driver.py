"""The driver of an encode run: list, plan, run the shard workers, then commit the run.

    list inputs -> plan shards (--mode resume/append/overwrite) -> shard workers (ray_exec.py)
      -> markers -> errors.parquet -> manifest.json (the commit point of the run)

Per-sample failures never raise: they are error rows in their shard's marker. The output's lease
(lease.py) is held from before the listing to the end, so two runs never interleave shards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..codec import load as load_codec
from ..config import ConfigurationError, EncodeConfig
from ..manifest import RUN_STATE, OutputRoot, RunIdentity, build_manifest, liveness, stable_hash
from ..preprocess.factory import Preprocessor, make_preprocessor
from ..registry import SINKS, lookup
from ..sinks import SinkSpec
from ..sources import Source, SourceItem, check_keys, listing_hash, open_source
from ..sources.base import fill_fingerprints
from . import ray_exec
from .lease import OutputLease
from .plan import plan_run
from .summary import RunSummary, count_nodes
from .superseded import attach_superseded_statistics
from .work import ShardResult
from .worker import WorkerSpec


def log_flip_pair(codec) -> None:
    """--flip-pair doubles the encode work; say so when the codec's latents flip exactly anyway."""
    from ..codec.flip import latent_flip_is_exact

    if latent_flip_is_exact(codec):
        print(
            f"--flip-pair: codec {codec.name or codec.hash[:12]} flips exactly in the latent domain "
            "(pipeline.codec.flip.flip_latent): the stored latent_flip equals flip_latent(latent)"
        )


def worker_plan(cfg: EncodeConfig, resources: dict[str, float]) -> tuple[int, int, str]:
    """(shard workers, torch threads per worker, device) for these resources (also the dry run's)."""
    cpus = int(resources.get("CPU", 1))
    gpus_per_worker = cfg.gpus_per_worker  # --num-gpus-per-worker, or 1 with --decode gpu
    if gpus_per_worker > 0:
        gpus = resources.get("GPU", 0)
        if gpus <= 0:
            flag = "--decode gpu" if cfg.decode_on_gpu else "--num-gpus-per-worker"
            raise ConfigurationError(f"{flag} was given but the Ray cluster has no GPUs")
        workers = cfg.workers or max(1, int(gpus / gpus_per_worker))
        return workers, 1, "cuda"
    workers = cfg.workers or max(1, cpus)
    return workers, max(1, cpus // workers), "cpu"


def executor_plan(cfg: EncodeConfig, resources: dict[str, float]) -> tuple[ray_exec.ExecutorPlan, int, str]:
    """The executor's resources per worker, with worker_plan's threads and device."""
    workers, threads, device = worker_plan(cfg, resources)
    if device != "cpu":
        return (
            ray_exec.ExecutorPlan(workers, cpus_per_worker=1, gpus_per_worker=cfg.gpus_per_worker),
            1,
            device,
        )
    cpus = max(1.0, float(resources.get("CPU", 1)))
    # more workers than CPUs (--workers) share them; otherwise each holds the CPUs its threads use
    return (
        ray_exec.ExecutorPlan(workers, cpus_per_worker=min(float(threads), cpus / workers)),
        threads,
        device,
    )


@dataclass
class Prepared:
    """What a run works out before touching the output (shared with the dry run)."""

    source: Source
    items: list[SourceItem]
    codec: Any
    preprocessor: Preprocessor
    settings: dict[str, Any]
    identity: RunIdentity
    root: OutputRoot


def prepare_run(cfg: EncodeConfig) -> Prepared:
    """List the inputs, load the codec, fix the run's identity. Reads only."""
    source = open_source(cfg.input, cfg.source, config=cfg, **cfg.source_options)
    items = source.list_items()
    if cfg.limit is not None:
        items = items[: cfg.limit]
    check_keys(items)
    # sources that list without file details get fingerprints from one stat per file (C4)
    items = fill_fingerprints(items, getattr(source, "storage_options", None))
    codec = load_codec(cfg.codec)
    preprocessor = make_preprocessor(cfg, source.modality, codec)
    settings = {
        "codec_hash": codec.hash,
        "preprocessing": preprocessor.to_dict(),
        "sink": cfg.format,
        "shard_size": cfg.shard_size,
        "latent_format": cfg.latent_format,
    }
    if cfg.flip_pair:  # only when set: unbucketed, unflipped runs keep the settings hash they had
        settings["flip_pair"] = True
    identity = RunIdentity(settings=settings, listing_hash=listing_hash(items), label_map=source.label_map())
    root = OutputRoot(cfg.output, cfg.storage_options)
    return Prepared(source, items, codec, preprocessor, settings, identity, root)


def worker_spec(cfg: EncodeConfig, prep: Prepared, *, threads: int = 1, device: str = "cpu") -> WorkerSpec:
    """What every shard worker of this run is built from (the driver's; tests and benchmarks run
    ShardWorker(worker_spec(...)) in-process and get the run's bytes)."""
    return WorkerSpec(
        source=prep.source,
        preprocessor=prep.preprocessor,
        codec_ref=cfg.codec,
        codec_hash=prep.codec.hash,
        cache_salt=f"{prep.codec.hash}:{stable_hash(prep.settings['preprocessing'])}",
        sink_name=cfg.format,
        sink_spec=sink_spec(cfg),
        settings_hash=prep.identity.settings_hash,
        batch_size=cfg.batch_size,
        batch_pixels=cfg.batch_pixels,
        latent_format=cfg.latent_format,
        flip_pair=cfg.flip_pair,
        sample_timeout_s=cfg.sample_timeout_s,
        threads=threads,
        device=device,
    )


def sink_spec(cfg: EncodeConfig) -> SinkSpec:
    return SinkSpec(
        output=cfg.output,
        latent_format=cfg.latent_format,
        shard_size=cfg.shard_size,
        storage_options=cfg.storage_options,
        flip_pair=cfg.flip_pair,
    )


def run_encode(cfg: EncodeConfig) -> RunSummary:
    """Encode cfg.input into cfg.output; returns the summary. Idempotent per --mode (see plan).

    The output's lease (runtime/lease.py) is held from before the listing to the end, errors
    included: a second run on the same output fails fast instead of interleaving shards."""
    with OutputLease(OutputRoot(cfg.output, cfg.storage_options)) as lease:
        return _run_encode(cfg, lease)


def _run_encode(cfg: EncodeConfig, lease: OutputLease) -> RunSummary:
    started = time.perf_counter()
    prep = prepare_run(cfg)
    source, items, codec, preprocessor = prep.source, prep.items, prep.codec, prep.preprocessor
    settings, identity, root = prep.settings, prep.identity, prep.root
    plan = plan_run(root, items, identity, cfg.shard_size, cfg.mode)

    sink = lookup(SINKS, cfg.format, "sink")(sink_spec(cfg))
    # append: re-encoded (changed) sources carry the statistics of the samples they supersede
    plan.todo = attach_superseded_statistics(plan.todo, plan.replaced, sink, codec)
    fixed = preprocessor.fixed_shape()
    latent_shape = list(codec.latent_shape(fixed)) if fixed else None
    bucket_inputs = preprocessor.bucket_shapes()
    bucket_latents = (
        {b: list(codec.latent_shape(shape)) for b, shape in bucket_inputs.items()} if bucket_inputs else None
    )
    if cfg.flip_pair:
        log_flip_pair(codec)
    codec_info = {"name": codec.name, "hash": codec.hash, "config": codec.config.to_dict()}
    latent_info = {
        "dtype": "int8",
        "bits": codec.config.latent_bits,
        "shape": latent_shape,
        "dequantize": "codec.compander.to_normal (Gaussian-CDF inverse companding)",
    }
    sink.prepare(
        plan.total_slots,
        {b: tuple(s) for b, s in bucket_latents.items()}
        if bucket_latents
        else (tuple(latent_shape) if latent_shape else None),
        {
            "codec": codec_info,
            "latent": latent_info,
            "preprocessing": settings["preprocessing"],
            "label_map": source.label_map(),
        },
    )

    encode_started = time.perf_counter()
    first_commit: list[float] = []
    results: list[ShardResult] = []
    if plan.todo:
        ray_exec.init_ray(cfg.address)
        encode_started = time.perf_counter()
        executor, threads, device = executor_plan(cfg, ray_exec.cluster_resources())
        worker = worker_spec(cfg, prep, threads=threads, device=device)
        with _Progress(len(plan.todo), sum(len(t.items) for t in plan.todo), cfg.progress) as progress:

            def on_result(result: ShardResult) -> None:
                if result.failed is None and not first_commit:
                    first_commit.append(time.perf_counter() - started)
                progress.update(result)

            results = ray_exec.run_shards(worker, plan.todo, executor, on_result=on_result)
    encode_seconds = time.perf_counter() - encode_started
    failures = {r.shard: r.failed for r in results if r.failed}
    failed = sorted(failures)

    lease.check()  # another run took the output over (our lease expired): do not commit over it
    markers = root.markers()
    root.write_errors(liveness(markers).live_errors)  # less rows replaced by a re-encode (append)
    manifest = build_manifest(
        identity=identity,
        codec=codec_info,
        latent=latent_info,
        source=source.describe(),
        label_map=source.label_map(),
        markers=markers,
        inputs=plan.inputs,  # all planned inputs: a failed shard leaves written + errors short of it
        appends=plan.appends,
        buckets=bucket_latents,
    )
    decode = None
    if "decode" in settings["preprocessing"]:  # --decode gpu: how the written samples were decoded
        ways = ("decoded_on_device", "decode_fallbacks")
        decode = {k: sum(e.get(k, 0) for e in manifest["shards"]) for k in ways}
        manifest["totals"] |= decode
    root.write_manifest(manifest)
    # the run is complete once its manifest is there (readers following the run stop on this)
    root.write_json(RUN_STATE, root.read_json(RUN_STATE) | {"complete": True})
    totals = manifest["totals"]
    return RunSummary(
        inputs=totals["inputs"],
        written=totals["written"],
        errors=totals["errors"],
        failed_shards=failed,
        shards_encoded=len(plan.todo) - len(failed),
        shards_skipped=len(plan.done),
        seconds=time.perf_counter() - started,
        bytes_written=sum(r.bytes for r in results),
        input_bytes=sum(r.input_bytes for r in results),
        output=cfg.output,
        written_this_run=sum(r.written for r in results),
        failures=failures,
        encode_seconds=encode_seconds,
        changed=len(plan.changed),
        decode=decode,
        first_commit_seconds=first_commit[0] if first_commit else None,
        shards_per_node=count_nodes([r.node for r in results if r.failed is None]),
    )


class _Progress:
    """A shard/sample progress bar on the driver (tqdm), or nothing with --no-progress."""

    def __init__(self, shards: int, samples: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=samples, unit="input", desc=f"encoding {shards} shards", smoothing=0.1)

    def __enter__(self) -> _Progress:
        return self

    def update(self, result: ShardResult) -> None:
        if self.bar is not None:
            self.bar.update(result.inputs)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()
