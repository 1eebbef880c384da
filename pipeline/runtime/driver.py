"""The driver of an encode run: list, plan, run the shard workers, then commit the run.

    list inputs -> plan shards (--mode resume/append/overwrite) -> shard workers (ray_exec.py)
      -> markers -> errors.parquet -> manifest.json (the commit point of the run)

Per-sample failures never raise: they are error rows in their shard's marker. The output's lease
(lease.py) is held from before the listing to the end, so two runs never interleave shards.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..config import ConfigurationError, EncodeConfig
from ..manifest import (
    LISTING_ROW_GROUP,
    RUN_STATE,
    OutputRoot,
    RunIdentity,
    build_manifest,
    liveness,
    stable_hash,
)
from ..preprocess.factory import DeviceDecode, Preprocessor, latent_shape_of, make_preprocessor
from ..registry import SINKS, lookup
from ..sources import Source, open_source
from ..sources.listing import Listing
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
    gpus_per_worker = cfg.ray.gpus_per_worker  # --num-gpus-per-worker, or 1 with --decode gpu
    if gpus_per_worker > 0:
        gpus = resources.get("GPU", 0)
        if gpus <= 0:
            flag = "--decode gpu" if cfg.ray.decode_on_gpu else "--num-gpus-per-worker"
            raise ConfigurationError(f"{flag} was given but the Ray cluster has no GPUs")
        workers = cfg.ray.workers or max(1, int(gpus / gpus_per_worker))
        return workers, 1, "cuda"
    workers = cfg.ray.workers or max(1, cpus)
    return workers, max(1, cpus // workers), "cpu"


def executor_plan(cfg: EncodeConfig, resources: dict[str, float]) -> tuple[ray_exec.ExecutorPlan, int, str]:
    """The executor's resources per worker, with worker_plan's threads and device."""
    workers, threads, device = worker_plan(cfg, resources)
    if device != "cpu":
        return (
            ray_exec.ExecutorPlan(workers, cpus_per_worker=1, gpus_per_worker=cfg.ray.gpus_per_worker),
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
    listing: Listing
    codec: Any
    preprocessor: Preprocessor
    settings: dict[str, Any]
    identity: RunIdentity
    root: OutputRoot
    listing_about: dict[str, Any]  # what the listing was made from (stored with it in the output)
    listing_reused: bool = False  # resume: the output's own listing, not listed again

    @property
    def skipped(self) -> dict[str, int]:
        """Files under the input that are not inputs, by reason (kept with the listing)."""
        return dict(self.listing_about.get("skipped", {}))

    def source_description(self) -> dict[str, Any]:
        """What the manifest records about the source (a reused listing's skipped files included)."""
        return self.source.describe() | ({"skipped": self.skipped} if self.skipped else {})


def prepare_run(
    cfg: EncodeConfig, opened: threading.Event | None = None, ray_up: threading.Event | None = None
) -> Prepared:
    """List the inputs, load the codec, fix the run's identity. Reads only.

    `opened` is set once the source is open (the input exists and holds inputs of its kind);
    partitioned sources list their partitions as Ray tasks once `ray_up` is set, on threads before."""
    source = open_source(cfg.input, cfg.source, cfg.policies(), **cfg.source_options)
    if opened is not None:
        opened.set()
    root = OutputRoot(cfg.output, cfg.sink.storage_options)
    made_from = {"input": cfg.input, "source": source.registry_name, "limit": cfg.limit}
    stored = root.stored_listing() if cfg.mode == "resume" else None
    if stored is not None and {k: stored[1].get(k) for k in made_from} == made_from:
        # resume continues the listing it started with (--mode append lists again for new inputs)
        listing, about = stored
        listing_hash, label_map = about["listing_hash"], about["label_map"]
        skipped = about.get("skipped", {})
    else:
        listing = source.listing(cfg.limit, map_fn=ray_exec.partition_map(ray_up or threading.Event()))
        listing.check_keys()
        listing_hash, label_map = listing.hash(), source.label_map()
        skipped = source.describe().get("skipped", {})  # known once listed
    from ..codec import load as load_codec  # torch: imported here, while Ray starts on the main thread

    codec = load_codec(cfg.codec)
    stems = source.grouped_stems()  # MUSDB: (S, C, L) per item, latents (S, ...)
    preprocessor = make_preprocessor(
        source.modality,
        codec,
        image=cfg.image,
        audio=cfg.audio,
        raster=cfg.raster,
        decode=DeviceDecode.from_ray(cfg.ray),
        stems=stems,
    )
    settings = {
        "codec_hash": codec.hash,
        "preprocessing": preprocessor.to_dict(),
        "sink": cfg.sink.format,
        "shard_size": cfg.sink.shard_size,
        "latent_format": cfg.sink.latent_format,
    }
    if cfg.sink.flip_pair:  # only when set: unbucketed, unflipped runs keep the settings hash they had
        settings["flip_pair"] = True
    identity = RunIdentity(settings=settings, listing_hash=listing_hash, label_map=label_map)
    about = made_from | {"listing_hash": listing_hash, "label_map": label_map, "skipped": skipped}
    return Prepared(source, listing, codec, preprocessor, settings, identity, root, about, stored is not None)


def worker_spec(cfg: EncodeConfig, prep: Prepared, *, threads: int = 1, device: str = "cpu") -> WorkerSpec:
    """What every shard worker of this run is built from (the driver's; tests and benchmarks run
    ShardWorker(worker_spec(...)) in-process and get the run's bytes)."""
    return WorkerSpec(
        source=prep.source,
        preprocessor=prep.preprocessor,
        codec_ref=cfg.codec,
        codec_hash=prep.codec.hash,
        cache_salt=f"{prep.codec.hash}:{stable_hash(prep.settings['preprocessing'])}",
        sink_spec=cfg.sink,
        settings_hash=prep.identity.settings_hash,
        batch_size=cfg.ray.batch_size,
        batch_pixels=cfg.ray.batch_pixels,
        sample_timeout_s=cfg.ray.sample_timeout_s,
        threads=threads,
        device=device,
    )


def run_encode(cfg: EncodeConfig) -> RunSummary:
    """Encode cfg.input into cfg.output; returns the summary. Idempotent per --mode (see plan).

    The output's lease (runtime/lease.py) is held from before the listing to the end, errors
    included: a second run on the same output fails fast instead of interleaving shards."""
    with OutputLease(OutputRoot(cfg.output, cfg.sink.storage_options)) as lease:
        return _run_encode(cfg, lease)


@dataclass
class PreparedOutput:
    """A run's plan, with the output made ready for its shards (the driver's work before encoding)."""

    prep: Prepared
    plan: Any  # plan.Plan
    codec_info: dict[str, Any]
    latent_info: dict[str, Any]
    bucket_latents: dict[str, list[int]] | None


def prepare_output(
    cfg: EncodeConfig, opened: threading.Event | None = None, ray_up: threading.Event | None = None
) -> PreparedOutput:
    """List, plan (--mode), and prepare the sink (e.g. size a Zarr store): everything before encoding."""
    prep = prepare_run(cfg, opened, ray_up)
    codec, preprocessor = prep.codec, prep.preprocessor
    plan = plan_run(prep.root, prep.listing, prep.identity, cfg.sink.shard_size, cfg.mode)
    if not prep.listing_reused:
        prep.root.write_listing(prep.listing, prep.listing_about, row_group=LISTING_ROW_GROUP)
    sink = lookup(SINKS, cfg.sink.format, "sink")(cfg.sink)
    # append: re-encoded (changed) sources carry the statistics of the samples they supersede
    plan.todo = attach_superseded_statistics(plan.todo, plan.replaced, sink, codec)
    fixed = preprocessor.fixed_shape()
    latent_shape = latent_shape_of(codec, fixed) if fixed else None
    bucket_inputs = preprocessor.bucket_shapes()
    bucket_latents = (
        {b: list(codec.latent_shape(shape)) for b, shape in bucket_inputs.items()} if bucket_inputs else None
    )
    if cfg.sink.flip_pair:
        log_flip_pair(codec)
    codec_info = codec.identity()  # name, hash, encoder hash, config
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
            "preprocessing": prep.settings["preprocessing"],
            "label_map": prep.identity.label_map,
        },
    )
    return PreparedOutput(prep, plan, codec_info, latent_info, bucket_latents)


def _output_is_complete(cfg: EncodeConfig) -> bool:
    """A finished run on this output: resuming it will most likely find nothing to do."""
    root = OutputRoot(cfg.output, cfg.sink.storage_options)
    try:
        return cfg.mode == "resume" and bool(root.read_json(RUN_STATE).get("complete"))
    except Exception:  # noqa: BLE001 - no state (yet): a new run
        return False


def _start_workers(cfg: EncodeConfig) -> tuple[ray_exec.WorkerPool, float]:
    """Ray up and the shard workers loading the codec; returns the pool and when Ray was up."""
    ray_exec.init_ray(cfg.ray.address)
    up = time.perf_counter()
    executor, threads, device = executor_plan(cfg, ray_exec.cluster_resources())
    return ray_exec.WorkerPool(executor, cfg.codec, device, threads), up


def _run_encode(cfg: EncodeConfig, lease: OutputLease) -> RunSummary:
    started = time.perf_counter()
    # Listing, planning and preparing the output (a thread) overlap starting Ray and the workers'
    # codec loads (Ray's init must stay on the main thread): on a small run they are most of its time.
    # Ray starts once the source has opened (a missing or empty input is one line, no Ray start-up);
    # GPU runs check the device on the driver first (a clear error before any Ray start-up).
    pool: ray_exec.WorkerPool | None = None
    opened, ray_up = threading.Event(), threading.Event()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as background:
        preparing = background.submit(prepare_output, cfg, opened, ray_up)
        try:
            while not opened.wait(0.02):
                if preparing.done():
                    preparing.result()  # the source's error
                    break
            if not _output_is_complete(cfg) and cfg.ray.gpus_per_worker == 0:
                try:
                    pool, encode_started = _start_workers(cfg)
                    ray_up.set()
                except ConfigurationError:
                    preparing.result()  # the preparation's own error, if any, says more
                    raise
            out = preparing.result()
            plan = out.plan
            if plan.todo and pool is None:
                pool, encode_started = _start_workers(cfg)
                ray_up.set()
            results = _encode(cfg, out, pool, started) if plan.todo else ([], None)
        finally:
            if pool is not None:
                pool.close()
    results, first_commit = results
    encode_seconds = time.perf_counter() - encode_started if plan.todo else 0.0
    prep = out.prep
    settings, identity, root = prep.settings, prep.identity, prep.root
    failures = {r.shard: r.failed for r in results if r.failed}
    failed = sorted(failures)

    lease.check()  # another run took the output over (our lease expired): do not commit over it
    markers = root.markers()
    root.write_errors(liveness(markers).live_errors)  # less rows replaced by a re-encode (append)
    manifest = build_manifest(
        identity=identity,
        codec=out.codec_info,
        latent=out.latent_info,
        source=prep.source_description(),
        label_map=identity.label_map,
        markers=markers,
        inputs=plan.inputs,  # all planned inputs: a failed shard leaves written + errors short of it
        appends=plan.appends,
        buckets=out.bucket_latents,
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
        first_commit_seconds=first_commit,
        shards_per_node=count_nodes([r.node for r in results if r.failed is None]),
        skipped=prep.skipped,
    )


def _encode(
    cfg: EncodeConfig, out: PreparedOutput, pool: ray_exec.WorkerPool, started: float
) -> tuple[list[ShardResult], float | None]:
    """The planned shards through the pool: (results, seconds from the run's start to the first commit)."""
    todo = out.plan.todo
    spec = worker_spec(cfg, out.prep, threads=pool.threads, device=pool.device)
    first_commit: list[float] = []
    with _Progress(len(todo), sum(len(t.items) for t in todo), cfg.progress) as progress:

        def on_result(result: ShardResult) -> None:
            if result.failed is None and not first_commit:
                first_commit.append(time.perf_counter() - started)
            progress.update(result)

        results = pool.run(spec, todo, on_result=on_result)
    return results, (first_commit[0] if first_commit else None)


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
