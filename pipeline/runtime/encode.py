"""The encode run on Ray Data: shards of inputs stream through decode -> encode -> write.

    driver: list inputs -> plan shards (resume/append) -> Ray Data:
        from_items(shard tasks)                  one row per shard (the unit of commit and resume)
        .map_batches(decode_shard)               CPU tasks: read bytes, decode, preprocess
        .map_batches(ShardEncoder, actors)       actors hold the codec once (GPU with --num-gpus-per-worker)
        .map_batches(write_shard)                sink writes the shard atomically, then its marker
    driver: markers -> errors.parquet -> manifest.json (the commit point of the run)

Why shard-granular rows: a shard must be written by exactly one writer, in input order, to be
deterministic and atomically committed; Ray Data streams shards with backpressure, so memory is
bounded by the shards in flight, not by the corpus. Per-sample failures never raise: they become
error rows. This module is the only place that touches Ray's API.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..codec import load as load_codec
from ..config import ConfigurationError, EncodeConfig
from ..manifest import RUN_STATE, OutputRoot, RunIdentity, ShardMarker, build_manifest, liveness, stable_hash
from ..preprocess.image import DecodeError, ImagePolicy, ImagePreprocessor, parse_buckets
from ..preprocess.raster import RasterPreprocessor
from ..registry import SINKS, lookup
from ..sinks import EncodedSample, SinkSpec
from ..sources import SourceItem, check_keys, listing_hash, open_source
from ..sources.base import fill_fingerprints
from ..statistics import HistogramAccumulator
from .batching import encode_robust, nonfinite_reason, plan_batches
from .lease import OutputLease
from .plan import ShardTask, plan_run
from .superseded import attach_superseded_statistics

WRITE_ATTEMPTS = 3  # bounded retries of a shard write before the shard is reported as failed
# A worker process that dies (OOM kill, segfault, node loss) takes its shard with it; Ray runs the
# shard again on a restarted actor / another worker, at most TASK_RETRIES more times. A shard that
# still fails is reported like a failed write (summary, exit code 1) and the rest of the run goes on.
# Actors may restart any number of times: every restart is paid for by one of those bounded retries.
TASK_RETRIES = 3
ACTOR_RESTARTS = -1
KILL_SWITCH_ENV = "WALLOC_TEST_KILL_SWITCH"  # tests only: see _test_kill_switch


@dataclass
class RunSummary:
    inputs: int
    written: int
    errors: int
    failed_shards: list[int]
    shards_encoded: int
    shards_skipped: int
    seconds: float
    bytes_written: int
    input_bytes: int  # raw uint8 size of the codec inputs encoded in this run
    output: str
    written_this_run: int
    failures: dict[int, str] = field(default_factory=dict)  # failed shard -> last error
    encode_seconds: float = 0.0  # from a started Ray to the last shard (excludes Ray start-up)
    changed: int = 0  # append: inputs re-encoded because their source changed (old entries superseded)
    decode: dict[str, int] | None = None  # --decode gpu: decoded_on_device / decode_fallbacks (all shards)

    @property
    def samples_per_s(self) -> float:
        return self.written_this_run / self.encode_seconds if self.encode_seconds > 0 else 0.0

    def format(self) -> str:
        ratio = self.input_bytes / self.bytes_written if self.bytes_written else float("nan")
        lines = [
            f"output           {self.output}",
            f"inputs           {self.inputs}  (written {self.written} + errors {self.errors})",
            f"shards           {self.shards_encoded} encoded, {self.shards_skipped} already committed"
            + (f", FAILED: {self.failed_shards}" if self.failed_shards else ""),
            f"this run         {self.written_this_run} samples in {self.encode_seconds:.1f} s of encoding "
            f"= {self.samples_per_s:.1f} samples/s ({self.seconds:.1f} s with listing and Ray start-up)",
            f"bytes written    {self.bytes_written:,} (inputs {self.input_bytes:,} raw: ratio {ratio:.1f}x)",
        ]
        if self.decode is not None:
            lines.append(
                f"decode           {self.decode['decoded_on_device']} on the device, "
                f"{self.decode['decode_fallbacks']} fell back to the CPU path (meta: decode_fallback)"
            )
        if self.changed:
            lines.append(f"changed sources  {self.changed} re-encoded (old entries: manifest `superseded`)")
        lines += [f"shard {shard} FAILED  {reason}" for shard, reason in sorted(self.failures.items())]
        if self.failed_shards:
            lines.append("failed shards have no marker: the same command again (--mode resume) retries them")
        return "\n".join(lines)


def make_preprocessor(cfg: EncodeConfig, modality: str, codec) -> Any:
    """The preprocessing for a source's modality, parameterised by the codec (channels, 2^J)."""
    c = codec.config
    builders = {
        "image": lambda: ImagePreprocessor(
            ImagePolicy(
                size=cfg.size,
                crop=cfg.crop,
                channels=c.channels,
                multiple=c.block,
                buckets=parse_buckets(cfg.buckets, c.block) if cfg.buckets else None,
            )
        ),
        "raster": lambda: RasterPreprocessor.from_config(cfg, codec),
    }
    try:
        from ..preprocess.audio import AudioPreprocessor  # audio stack is optional at import time

        builders["audio"] = lambda: AudioPreprocessor.from_config(cfg, codec)
    except ImportError:
        pass
    if modality not in builders:
        raise ValueError(f"no preprocessing for {modality!r} inputs")
    if cfg.buckets and modality != "image":
        raise ValueError(f"--buckets is for images; these inputs are {modality}")
    if cfg.decode == "gpu":
        return _device_preprocessor(cfg, modality, builders[modality]())
    return builders[modality]()


def _device_preprocessor(cfg: EncodeConfig, modality: str, cpu_preprocessor) -> Any:
    """--decode gpu: the image preprocessor that decodes in the encoder actors, on their device.

    Fails at once without a GPU: on the driver for a local Ray (torch.cuda.is_available()), from
    the cluster's resources in worker_plan otherwise (a head node may have no GPU of its own)."""
    from ..preprocess.image_device import DeviceDecodeSpec, DeviceImagePreprocessor

    if modality != "image" or type(cpu_preprocessor) is not ImagePreprocessor:
        raise ValueError(f"--decode gpu decodes JPEG images; {modality} inputs decode on CPUs (--decode cpu)")
    if cpu_preprocessor.policy.channels != 3:
        raise ValueError("--decode gpu decodes to RGB: it needs a 3-channel codec (use --decode cpu)")
    device = cfg.decode_device or "cuda"
    if cfg.decode_device is None and cfg.address not in (None, "local"):
        spec = DeviceDecodeSpec(device=device, backend="torchvision-nvjpeg")
    else:
        spec = DeviceDecodeSpec.for_device(device)
    return DeviceImagePreprocessor(cpu_preprocessor.policy, spec=spec)


# --- Ray Data stages (run on workers) ---------------------------------------------------------


def _error(item: SourceItem, shard: int, stage: str, reason: str) -> dict[str, Any]:
    return {"key": item.key, "source": item.uri, "shard": shard, "stage": stage, "reason": reason[:2000]}


def _error_row(sample: dict[str, Any], shard: int, reason: str) -> dict[str, Any]:
    """The error row of a decoded sample that could not be encoded."""
    return {
        "key": sample["key"],
        "source": sample["meta"]["source"],
        "shard": shard,
        "stage": "encode",
        "reason": reason[:2000],
    }


def _array_shape(sample: dict[str, Any]) -> tuple:
    return tuple(sample["array"].shape)


def _test_kill_switch(stage: str, shard: int) -> None:
    """Tests only: make this worker process die, as an OOM kill would (no cleanup, no exception).

    $WALLOC_TEST_KILL_SWITCH names a file of lines `<stage> <shard> once|always`; stage `encode`
    dies in the middle of encoding the shard, `write` after the shard is in place but before its
    marker. "once": only the first process to get there dies (it creates `<file>.<stage>-<shard>`
    first); the retry runs normally. "always": every attempt at that shard dies. Each death appends
    `<stage> <shard> <pid>` to `<file>.log`. Without the variable (every real run): one dict lookup."""
    path = os.environ.get(KILL_SWITCH_ENV)
    if not path:
        return
    try:
        with open(path) as f:
            lines = [line.split() for line in f if line.strip()]
    except FileNotFoundError:
        return
    for want_stage, want_shard, how in lines:
        if (want_stage, int(want_shard)) != (stage, shard):
            continue
        if how == "once":
            try:
                os.close(os.open(f"{path}.{stage}-{shard}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:  # fired already: this is the retry
                return
        with open(f"{path}.log", "a") as f:
            f.write(f"{stage} {shard} {os.getpid()}\n")
        os._exit(1)


def _with_timeout(pool: concurrent.futures.ThreadPoolExecutor, fn, timeout: float):
    return pool.submit(fn).result(timeout=timeout)


def _decode_one(pool, preprocessor, data: bytes, item: SourceItem, shard: int, timeout: float):
    """(Decoded, None, pool) or (None, error row, pool): one input through the CPU decode path."""
    try:
        decoded = _with_timeout(pool, lambda: preprocessor.decode(data, item), timeout)
    except concurrent.futures.TimeoutError:
        error = _error(item, shard, "timeout", f"decoding took longer than {timeout:.0f} s")
        return None, error, concurrent.futures.ThreadPoolExecutor(max_workers=1)  # abandon the thread
    except DecodeError as err:
        return None, _error(item, shard, "decode", str(err)), pool
    except Exception as err:  # noqa: BLE001
        return None, _error(item, shard, "decode", f"{type(err).__name__}: {err}"), pool
    return decoded, None, pool


def _sample(item: SourceItem, slot: int, data: bytes, decoded, cache_salt: str) -> dict[str, Any]:
    """A decoded sample with its metadata (source hash and cache key included)."""
    source_sha = hashlib.sha256(data).hexdigest()
    meta = dict(item.meta) | decoded.meta
    meta |= {
        "key": item.key,
        "source": item.uri,
        "label": item.label,
        "source_sha256": source_sha,
        "cache_key": hashlib.sha256(f"{source_sha}:{cache_salt}".encode()).hexdigest(),
    }
    return {"key": item.key, "label": item.label, "slot": slot, "array": decoded.array, "meta": meta}


def decode_shard(batch: dict[str, np.ndarray], source, preprocessor, cache_salt: str, timeout: float):
    """Read and decode every item of each shard row; failures become error rows (never raise).

    With a device-decoding preprocessor (--decode gpu) it only reads: samples carry the bytes
    ("data", "item") to the encoder actors, which decode them in batches (ShardEncoder)."""
    read_only = getattr(preprocessor, "device_decode", False)
    out_payload = []
    for payload in batch["payload"]:
        task: ShardTask = payload["task"]
        samples, errors = [], list(payload.get("errors", []))
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        for slot, item in enumerate(task.items):
            try:
                data = _with_timeout(pool, lambda item=item: source.read_bytes(item), timeout)
            except concurrent.futures.TimeoutError:
                errors.append(
                    _error(item, task.shard, "timeout", f"reading took longer than {timeout:.0f} s")
                )
                pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)  # abandon the stuck thread
                continue
            except Exception as err:  # noqa: BLE001 - any read failure is a per-sample error
                errors.append(_error(item, task.shard, "read", f"{type(err).__name__}: {err}"))
                continue
            if read_only:
                samples.append(
                    {"key": item.key, "label": item.label, "slot": slot, "data": data, "item": item}
                )
                continue
            decoded, error, pool = _decode_one(pool, preprocessor, data, item, task.shard, timeout)
            if error is not None:
                errors.append(error)
                continue
            samples.append(_sample(item, slot, data, decoded, cache_salt))
        pool.shutdown(wait=False)
        out_payload.append({"task": task, "samples": samples, "errors": errors})
    return {"shard": batch["shard"], "payload": np.array(out_payload, dtype=object)}


def _check_device_decoder(preprocessor, device: str) -> None:
    """The actor decodes with the backend the driver recorded in the manifest, or not at all."""
    import torch

    from ..preprocess.image_device import available_backend

    spec = preprocessor.spec
    if torch.device(device).type != torch.device(spec.device).type:
        raise RuntimeError(f"--decode gpu: the run decodes on {spec.device}, this encoder runs on {device}")
    backend = available_backend(device)
    if backend != spec.backend:
        raise RuntimeError(
            f"--decode gpu: this worker would decode with {backend}, the run records {spec.backend} "
            "(latents depend on it): install the same torchvision on every node"
        )


def decode_counts(encoded: list) -> dict[str, int]:
    """--decode gpu: how the shard's samples were decoded (on the device / CPU fallbacks), else {}."""
    ways = [e.meta.get("decode") for e in encoded]
    if not any(ways):
        return {}
    return {"decoded_on_device": ways.count("device"), "decode_fallbacks": ways.count("cpu")}


class ShardEncoder:
    """A Ray actor: loads the codec once, encodes whole shards in batches of equal-shape samples.

    With `decode` (decode_shard's keyword arguments) the actor also reads and decodes its shards:
    on CPU-only runs one actor stage does both, so decoded pixels never go through the object store."""

    def __init__(
        self,
        codec_ref: str,
        codec_hash: str,
        preprocessor,
        batch_size: int,
        latent_format: str,
        threads: int,
        device: str,
        decode: dict[str, Any] | None = None,
        device_decode: dict[str, Any] | None = None,
        flip_pair: bool = False,
        batch_pixels: int | None = None,
    ):
        import torch

        if device == "cpu":
            torch.set_num_threads(max(1, threads))
        self.torch = torch
        self.device = device
        self.codec = load_codec(codec_ref).to(device).freeze()
        if self.codec.hash != codec_hash:
            raise RuntimeError(
                f"worker loaded codec {self.codec.hash[:12]} for {codec_ref!r}, driver has {codec_hash[:12]}"
            )
        self.preprocessor = preprocessor
        self.batch_size = batch_size
        self.batch_pixels = batch_pixels or EncodeConfig.batch_pixels  # codec-input values per call
        self.latent_format = latent_format
        self.decode = decode
        self.flip_pair = flip_pair
        self.device_decode = device_decode  # --decode gpu: {"cache_salt", "timeout"}; see _decode_on_device
        if device_decode is not None:
            _check_device_decoder(preprocessor, device)

    def _encode(self, arrays: list[np.ndarray]) -> np.ndarray:
        """(B, *latent) latents; with --flip-pair (B, 2, *latent): [latent, latent of the mirror]."""
        if isinstance(arrays[0], self.torch.Tensor):  # --decode gpu: pixels already on the device
            x = self.preprocessor.codec_input(self.torch.stack(arrays))
        else:
            x = self.torch.from_numpy(np.stack([self.preprocessor.codec_input(a) for a in arrays]))
            x = x.to(self.device)
        if self.flip_pair:  # the mirrored inputs ride in the same codec call (one batch of 2B)
            x = self.torch.cat([x, x.flip(-1)])
        z = self.codec.encode(x).cpu().numpy()  # only int8 latents leave the device
        n = len(arrays)
        return np.stack([z[:n], z[n:]], axis=1) if self.flip_pair else z

    def _decode_on_device(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """--decode gpu: raw bytes -> pixels on self.device, batch_size JPEGs per decoder call.

        Inputs the device decoder does not take (probe_jpeg) or fails on go through the CPU path
        one by one, then to the device; their meta says `"decode": "cpu"` and why (counted per
        shard in the manifest). Decode failures there are error rows, as in decode_shard."""
        torch, pre = self.torch, self.preprocessor
        cache_salt, timeout = self.device_decode["cache_salt"], self.device_decode["timeout"]
        out_payload = []
        for payload in batch["payload"]:
            task, raw, errors = payload["task"], payload["samples"], list(payload["errors"])
            samples = []
            pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
            for i in range(0, len(raw), self.batch_size):
                part = raw[i : i + self.batch_size]
                try:
                    results = pre.decode_batch([r["data"] for r in part], device=self.device)
                except Exception as err:  # noqa: BLE001 - e.g. out of device memory: the CPU path
                    results = [f"device batch failed ({type(err).__name__}: {str(err)[:200]})"] * len(part)
                for r, res in zip(part, results, strict=True):
                    if not isinstance(res, str):
                        sample = _sample(r["item"], r["slot"], r["data"], res, cache_salt)
                        sample["meta"]["decode"] = "device"
                        samples.append(sample)
                        continue
                    decoded, error, pool = _decode_one(pool, pre, r["data"], r["item"], task.shard, timeout)
                    if error is not None:
                        error["reason"] = f"{error['reason']} (device path: {res})"[:2000]
                        errors.append(error)
                        continue
                    sample = _sample(r["item"], r["slot"], r["data"], decoded, cache_salt)
                    sample["array"] = torch.from_numpy(decoded.array).to(self.device)
                    sample["meta"] |= {"decode": "cpu", "decode_fallback": res}
                    samples.append(sample)
            pool.shutdown(wait=False)
            samples.sort(key=lambda s: s["slot"])
            out_payload.append({"task": task, "samples": samples, "errors": errors})
        return {"shard": batch["shard"], "payload": np.array(out_payload, dtype=object)}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.decode is not None:
            batch = decode_shard(batch, **self.decode)
        if self.device_decode is not None:
            batch = self._decode_on_device(batch)
        out_payload = []
        for payload in batch["payload"]:
            task, samples, errors = payload["task"], payload["samples"], list(payload["errors"])
            finite = []  # NaN/Inf inputs never reach the codec (runtime/batching.py)
            for s in samples:
                reason = nonfinite_reason(s["array"])
                if reason is None:
                    finite.append(s)
                else:
                    errors.append(_error_row(s, task.shard, reason))
            encoded, input_bytes = [], 0
            for part in plan_batches(finite, _array_shape, self.batch_size, self.batch_pixels):
                # out of memory: halves down to one sample; other failures: one by one
                results = encode_robust(lambda p: self._encode([s["array"] for s in p]), part)
                _test_kill_switch("encode", task.shard)
                for s, (z, reason) in zip(part, results, strict=True):
                    if reason is not None:
                        errors.append(_error_row(s, task.shard, reason))
                        continue
                    z, z_flip = (z[0], z[1]) if self.flip_pair else (z, None)
                    size = self.preprocessor.input_size(s["array"])
                    meta = s["meta"] | {"input_size": list(size)}
                    coded = coded_flip = None
                    if self.latent_format != "npy":
                        coded = self.codec.to_bytes(
                            self.torch.from_numpy(z), method=self.latent_format, size=size
                        )
                        if z_flip is not None:
                            coded_flip = self.codec.to_bytes(
                                self.torch.from_numpy(z_flip), method=self.latent_format, size=size
                            )
                    encoded.append(
                        EncodedSample(
                            key=s["key"],
                            label=s["label"],
                            latent=z,
                            meta=meta,
                            latent_bytes=coded,
                            slot=s["slot"],
                            bucket=meta.get("bucket"),
                            latent_flip=z_flip,
                            latent_flip_bytes=coded_flip,
                        )
                    )
                    input_bytes += int(np.prod(s["array"].shape))
            encoded.sort(key=lambda e: e.slot)
            histograms = HistogramAccumulator(self.codec.config.latent_bits)  # the marker's statistics
            for e in encoded:
                histograms.add(e.latent)
            out_payload.append(
                {
                    "task": task,
                    "encoded": encoded,
                    "errors": errors,
                    "input_bytes": input_bytes,
                    "statistics": histograms.to_dict(),
                }
            )
        return {"shard": batch["shard"], "payload": np.array(out_payload, dtype=object)}


def write_shard(batch: dict[str, np.ndarray], sink_name: str, spec: SinkSpec, settings_hash: str):
    """Write and commit each shard, then its marker. A shard that keeps failing is reported, not raised.

    An attempt is the whole shard then its marker; attempts are idempotent (same bytes under the same
    names), so a retry after a failure at any point, or a rerun of the task by Ray after its worker
    died, leaves exactly what one clean attempt leaves."""
    results = []
    sink = lookup(SINKS, sink_name, "sink")(spec)
    root = OutputRoot(spec.output, spec.storage_options)
    for payload in batch["payload"]:
        task, encoded, errors = payload["task"], payload["encoded"], payload["errors"]
        last_error = None
        for attempt in range(WRITE_ATTEMPTS):
            writer = sink.open_shard(task.shard, task.slot_offset)
            try:
                for sample in encoded:
                    writer.write(sample)
                stats = writer.commit()
                if stats.samples + len(errors) != len(task.items):
                    raise AssertionError(
                        f"shard {task.shard}: {stats.samples} + {len(errors)} != {len(task.items)} inputs"
                    )
                _test_kill_switch("write", task.shard)
                marker = ShardMarker(
                    stats=stats.to_dict() | decode_counts(encoded),
                    slot_offset=task.slot_offset,
                    keys=stats.keys,
                    errors=sorted(errors, key=lambda e: e["key"]),
                    settings_hash=settings_hash,
                    statistics=payload.get("statistics"),
                    fingerprints={it.key: it.fingerprint for it in task.items if it.fingerprint is not None},
                    superseded_statistics=task.superseded_statistics,
                )
                root.write_marker(marker)
                break
            except Exception as err:  # noqa: BLE001 - retried, then reported
                writer.abort()
                last_error = f"{type(err).__name__}: {err}"
                if attempt + 1 < WRITE_ATTEMPTS:
                    time.sleep(0.2 * (attempt + 1))
        else:
            results.append(
                {"shard": task.shard, "failed": last_error, "written": 0, "input_bytes": 0, "bytes": 0}
            )
            continue
        results.append(
            {
                "shard": task.shard,
                "failed": None,
                "written": stats.samples,
                "bytes": stats.bytes,
                "input_bytes": payload["input_bytes"],
            }
        )
    return {"result": np.array(results, dtype=object)}


# --- driver -------------------------------------------------------------------------------------


def log_flip_pair(codec) -> None:
    """--flip-pair doubles the encode work; say so when the codec's latents flip exactly anyway."""
    from ..codec.flip import latent_flip_is_exact

    if latent_flip_is_exact(codec):
        print(
            f"--flip-pair: codec {codec.name or codec.hash[:12]} flips exactly in the latent domain "
            "(pipeline.codec.flip.flip_latent): the stored latent_flip equals flip_latent(latent)"
        )


def _init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    ray.init(
        address=address,
        ignore_reinit_error=True,
        include_dashboard=False,
        log_to_driver=True,
        logging_level="WARNING",
    )


def _worker_plan(cfg: EncodeConfig) -> tuple[int, int, str]:
    """(encoder actors, torch threads per actor, device) sized from the cluster's resources."""
    import ray

    return worker_plan(cfg, ray.cluster_resources())


def worker_plan(cfg: EncodeConfig, resources: dict[str, float]) -> tuple[int, int, str]:
    """(encoder actors, torch threads per actor, device) for these resources (also the dry run's)."""
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


@dataclass
class Prepared:
    """What a run works out before touching the output (shared with the dry run)."""

    source: Any
    items: list[SourceItem]
    codec: Any
    preprocessor: Any
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

    spec = SinkSpec(
        output=cfg.output,
        latent_format=cfg.latent_format,
        shard_size=cfg.shard_size,
        storage_options=cfg.storage_options,
        flip_pair=cfg.flip_pair,
    )
    sink = lookup(SINKS, cfg.format, "sink")(spec)
    # append: re-encoded (changed) sources carry the statistics of the samples they supersede
    plan.todo = attach_superseded_statistics(plan.todo, plan.replaced, sink, codec)
    fixed = preprocessor.fixed_shape()
    latent_shape = list(codec.latent_shape(fixed)) if fixed else None
    bucket_inputs = getattr(preprocessor, "bucket_shapes", lambda: None)()
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

    if plan.todo:
        _init_ray(cfg.address)
    encode_started = time.perf_counter()
    results = _execute(
        cfg,
        plan.todo,
        source,
        preprocessor,
        identity,
        spec,
        codec_ref=cfg.codec,
        codec_hash=codec.hash,
        cache_salt=f"{codec.hash}:{stable_hash(settings['preprocessing'])}",
    )
    encode_seconds = time.perf_counter() - encode_started
    # a shard fails by its write (reported by write_shard) or by its workers dying more often than
    # the retries allow (Ray Data drops its row: see _execute); either way it has no marker
    returned = {r["shard"]: r for r in results}
    failures = {r["shard"]: r["failed"] for r in results if r["failed"]}
    for t in plan.todo:
        if t.shard not in returned:
            failures[t.shard] = (
                f"its task failed {TASK_RETRIES + 1} times (its worker died, or raised: see the Ray logs)"
            )
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
        bytes_written=sum(r["bytes"] for r in results),
        input_bytes=sum(r["input_bytes"] for r in results),
        output=cfg.output,
        written_this_run=sum(r["written"] for r in results),
        failures=failures,
        encode_seconds=encode_seconds,
        changed=len(plan.changed),
        decode=decode,
    )


def _execute(
    cfg, tasks, source, preprocessor, identity, spec, codec_ref, codec_hash, cache_salt
) -> list[dict]:
    if not tasks:
        return []
    _init_ray(cfg.address)
    import ray
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = cfg.progress
    ctx.execution_options.preserve_order = True
    # a row (shard) whose task still fails after its retries is dropped, not fatal: the driver
    # reports the shards that came back without a result, the others complete
    ctx.max_errored_blocks = -1
    # shard rows hold Python objects (tasks, samples): Ray stores them pickled either way; saying so
    # explicitly keeps it from logging an Arrow conversion warning from every worker of every run
    ctx.enable_fallback_to_arrow_object_ext_type = True
    workers, threads, device = _worker_plan(cfg)
    rows = [{"shard": t.shard, "payload": {"task": t}} for t in tasks]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    decode_kwargs = {
        "source": source,
        "preprocessor": preprocessor,
        "cache_salt": cache_salt,
        "timeout": cfg.sample_timeout_s,
    }
    # Retries of worker deaths are Ray remote options, which map_batches takes only as **ray_remote_args:
    # deprecated since Ray 2.60 (removal announced for 2.64), with no named parameter for them yet.
    # Ray is pinned; tests/pipeline/test_e2e_faults.py kills workers and fails if these stop applying.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        if device != "cpu":  # GPU actors encode only; reading and decoding run as CPU tasks
            ds = ds.map_batches(decode_shard, batch_size=1, fn_kwargs=decode_kwargs, max_retries=TASK_RETRIES)
        ds = ds.map_batches(
            ShardEncoder,
            batch_size=1,
            fn_constructor_kwargs={
                "codec_ref": codec_ref,
                "codec_hash": codec_hash,
                "preprocessor": preprocessor,
                "batch_size": cfg.batch_size,
                "batch_pixels": cfg.batch_pixels,
                "latent_format": cfg.latent_format,
                "threads": threads,
                "device": device,
                "decode": decode_kwargs if device == "cpu" else None,
                "device_decode": (
                    {"cache_salt": cache_salt, "timeout": cfg.sample_timeout_s}
                    if getattr(preprocessor, "device_decode", False)
                    else None
                ),
                "flip_pair": cfg.flip_pair,
            },
            # Ray queues more than one shard on an actor: a worker that dies also fails the shards queued
            # behind its own, and each such failure uses one of their retries (docs/guarantees.md, 4).
            # One shard in flight per actor would avoid that, but Ray's autoscaler then never grows the
            # pool, and a fixed pool starves the writers of CPUs (measured: every shard committed at the end)
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=workers),
            num_gpus=cfg.gpus_per_worker or None,
            max_restarts=ACTOR_RESTARTS,
            max_task_retries=TASK_RETRIES,
        )
        ds = ds.map_batches(
            write_shard,
            batch_size=1,
            fn_kwargs={"sink_name": cfg.format, "spec": spec, "settings_hash": identity.settings_hash},
            max_retries=TASK_RETRIES,
        )
    return [row["result"] for row in ds.iter_rows()]
