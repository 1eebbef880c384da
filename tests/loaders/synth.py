"""Pipeline outputs built by hand, following the on-disk contracts (schemas/, contracts C1-C6), so the
loaders can be tested on layouts whose writers may not exist yet and without a Ray run.

Files are written with tarfile / zarr / json only (never the pipeline's sinks); the manifest is
validated against schemas/manifest.schema.json on write, and markers are the pipeline's ShardMarker.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.manifest import RUN_STATE, OutputRoot, ShardMarker

CODEC_HASH = "c" * 64


@dataclass
class Sample:
    key: str
    latent: np.ndarray  # int8
    label: int = 0
    bucket: str | None = None
    latent_flip: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def make_samples(
    n: int,
    *,
    buckets: dict[str, tuple[int, int, int]] | None = None,
    weights: list[float] | None = None,
    flip: bool = False,
    audio_steps: int | None = None,
    seed: int = 0,
) -> list[Sample]:
    """n samples with distinct latents; buckets: name -> latent shape, drawn with the given weights."""
    rng = np.random.default_rng(seed)
    names = list(buckets or {})
    out = []
    for i in range(n):
        bucket = names[rng.choice(len(names), p=weights)] if names else None
        shape = buckets[bucket] if bucket else ((2, audio_steps) if audio_steps else (3, 4, 4))
        z = rng.integers(-128, 128, size=shape).astype(np.int8)
        z.flat[0] = i % 100  # tell samples apart even when random values collide
        meta: dict[str, Any] = {}
        if audio_steps:
            meta["valid_length"] = int(rng.integers(1, audio_steps * 8 + 1))  # J=3: 8 samples a step
        out.append(
            Sample(
                key=f"s{i:04d}",
                latent=z,
                label=i % 5,
                bucket=bucket,
                latent_flip=(np.flip(z, -1).copy() // 2).astype(np.int8) if flip else None,
                meta=meta,
            )
        )
    return out


def _meta(s: Sample) -> dict[str, Any]:
    meta = {
        "key": s.key,
        "source": f"file:///in/{s.key}.jpg",
        "cache_key": hashlib.sha256(s.key.encode()).hexdigest(),
    }
    if s.bucket:
        meta["bucket"] = s.bucket
    return meta | s.meta | {"label": s.label}


def _npy(z: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, z, allow_pickle=False)
    return buf.getvalue()


def _tar(samples: list[Sample]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for s in samples:
            files = [("latent.npy", _npy(s.latent))]
            if s.latent_flip is not None:
                files.append(("latent_flip.npy", _npy(s.latent_flip)))
            files += [("cls", str(s.label).encode()), ("json", json.dumps(_meta(s)).encode())]
            for ext, data in files:
                info = tarfile.TarInfo(f"{s.key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def statistics(samples: list[Sample], bits: int = 8) -> dict[str, Any]:
    """C3 statistics of these samples' latents (numpy, independent of pipeline.statistics)."""
    import torch

    from pipeline.codec.bottleneck import Compander

    channels = samples[0].latent.shape[0]
    offset = -(1 << (bits - 1))
    hist = np.zeros((channels, 1 << bits), dtype=np.int64)
    for s in samples:
        for c in range(channels):
            hist[c] += np.bincount(s.latent[c].ravel().astype(np.int64) - offset, minlength=1 << bits)
    values = np.arange(1 << bits) + offset
    deq = Compander(bits).to_normal(torch.from_numpy(values).float()).double().numpy()

    def moments(v):
        mean = (hist * v).sum(1) / hist.sum(1)
        return mean.tolist(), np.sqrt((hist * (v[None] - mean[:, None]) ** 2).sum(1) / hist.sum(1)).tolist()

    mean, std = moments(values.astype(np.float64))
    dmean, dstd = moments(deq)
    nz = [np.flatnonzero(h) for h in hist]
    return {
        "count": len(samples),
        "channels": channels,
        "positions": int(hist[0].sum()),
        "histogram_offset": offset,
        "histogram": hist.tolist(),
        "mean": mean,
        "std": std,
        "min": [int(x[0] + offset) for x in nz],
        "max": [int(x[-1] + offset) for x in nz],
        "dequantized_mean": dmean,
        "dequantized_std": dstd,
    }


def write_run(
    root: Path,
    samples: list[Sample],
    *,
    fmt: str = "webdataset",
    shard_size: int = 4,
    preprocessing: dict[str, Any] | None = None,
    codec_hash: str = CODEC_HASH,
    kind: str = "2d",
    superseded: list[dict[str, Any]] | None = None,
    with_statistics: bool = False,
    shard_numbers: list[int] | None = None,
    complete: bool = True,
    manifest: bool = True,
) -> Path:
    """A committed run (markers, _run.json, manifest) holding `samples` in shards of shard_size."""
    root.mkdir(parents=True, exist_ok=True)
    out = OutputRoot(str(root))
    preprocessing = preprocessing or {"size": 64, "crop": "center"}
    settings = {
        "codec_hash": codec_hash,
        "preprocessing": preprocessing,
        "sink": fmt,
        "shard_size": shard_size,
        "latent_format": "npy",
    }
    out.write_json(
        RUN_STATE,
        {
            "settings": settings,
            "settings_hash": "a" * 64,
            "listing_hash": "b" * 64,
            "label_map": {},
            "appends": 0,
            "complete": False,
        },
    )
    chunks = [samples[i : i + shard_size] for i in range(0, len(samples), shard_size)]
    numbers = shard_numbers or list(range(len(chunks)))
    bucketed = any(s.bucket for s in samples)
    store = None
    if fmt == "zarr":
        store = _zarr_store(root, samples, len(chunks) * shard_size, shard_size)
    entries = []
    for shard, chunk in zip(numbers, chunks, strict=True):
        if fmt == "zarr":
            entry = _zarr_shard(store, shard, chunk, numbers.index(shard) * shard_size)
        else:
            entry = _wds_shard(root, shard, chunk, bucketed)
        marker = ShardMarker(
            stats=entry, slot_offset=numbers.index(shard) * shard_size, keys=[s.key for s in chunk]
        )
        out.write_marker(marker)
        entries.append(entry | {"errors": 0, "slot_offset": marker.slot_offset})
    if not manifest:
        return root
    write_manifest(
        root,
        samples,
        entries,
        fmt=fmt,
        shard_size=shard_size,
        preprocessing=preprocessing,
        codec_hash=codec_hash,
        kind=kind,
        superseded=superseded,
        with_statistics=with_statistics,
    )
    if complete:
        state = out.read_json(RUN_STATE)
        out.write_json(RUN_STATE, state | {"complete": True})
    return root


def write_manifest(
    root,
    samples,
    entries,
    *,
    fmt,
    shard_size,
    preprocessing,
    codec_hash,
    kind="2d",
    superseded=None,
    with_statistics=False,
) -> None:
    buckets: dict[str, Any] = {}
    for s in samples:
        if s.bucket:
            b = buckets.setdefault(s.bucket, {"samples": 0, "latent_shape": list(s.latent.shape)})
            b["samples"] += 1
    manifest = {
        "format": "walloc-pipeline-manifest/1",
        "software": {"walloc_pipeline": "test"},
        "run": {
            "settings_hash": "a" * 64,
            "sink": fmt,
            "shard_size": shard_size,
            "latent_format": "npy",
            "appends": 0,
            "flip_pair": any(s.latent_flip is not None for s in samples),
        },
        "codec": {
            "name": None,
            "hash": codec_hash,
            "config": {
                "kind": kind,
                "channels": 3,
                "J": 3,
                "latent_dim": samples[0].latent.shape[0],
                "latent_bits": 8,
            },
        },
        "latent": {"dtype": "int8", "bits": 8, "shape": None if buckets else list(samples[0].latent.shape)},
        "preprocessing": preprocessing,
        "source": {"kind": "synthetic", "listing_hash": "b" * 64, "items": len(samples)},
        "label_map": {},
        "shards": entries,
        "totals": {"inputs": len(samples), "written": len(samples), "errors": 0},
    }
    if buckets:
        manifest["buckets"] = buckets
    if superseded:
        manifest["superseded"] = superseded
    if with_statistics:
        manifest["statistics"] = statistics(samples)
    OutputRoot(str(root)).write_manifest(manifest)


def _wds_shard(root: Path, shard: int, chunk: list[Sample], bucketed: bool) -> dict[str, Any]:
    base = {"shard": shard, "samples": len(chunk), "first_key": chunk[0].key, "last_key": chunk[-1].key}
    if not bucketed:
        data = _tar(chunk)
        name = f"shard-{shard:06d}.tar"
        (root / name).write_bytes(data)
        return base | {"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    parts = []
    for b in sorted({s.bucket for s in chunk}):
        mine = [s for s in chunk if s.bucket == b]
        data = _tar(mine)
        name = f"shard-{shard:06d}-b{b}.tar"
        (root / name).write_bytes(data)
        parts.append(
            {
                "name": name,
                "bucket": b,
                "samples": len(mine),
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "keys_first": mine[0].key,
                "keys_last": mine[-1].key,
            }
        )
    return base | {
        "name": parts[0]["name"],
        "bytes": sum(p["bytes"] for p in parts),
        "sha256": parts[0]["sha256"],
        "parts": parts,
    }


def _zarr_store(root: Path, samples: list[Sample], slots: int, shard_size: int):
    import zarr

    group = zarr.open_group(str(root / "latents.zarr"), mode="w")
    shapes = {s.bucket: s.latent.shape for s in samples}
    flip = any(s.latent_flip is not None for s in samples)
    for b, shape in shapes.items():
        prefix = f"buckets/{b}/" if b else ""
        for name in ("latents", "latents_flip") if flip else ("latents",):
            group.create_array(
                f"{prefix}{name}", shape=(slots, *shape), dtype="int8", chunks=(1, *shape), fill_value=0
            )
    group.create_array("labels", shape=(slots,), dtype="int64", chunks=(shard_size,), fill_value=-1)
    for name in ("keys", "meta") + (("bucket",) if any(shapes) else ()):
        group.create_array(name, shape=(slots,), dtype=str, chunks=(shard_size,), fill_value="")
    group.create_array("valid", shape=(slots,), dtype=bool, chunks=(shard_size,), fill_value=False)
    return group


def _zarr_shard(group, shard: int, chunk: list[Sample], offset: int) -> dict[str, Any]:
    region = slice(offset, offset + len(chunk))
    for b in {s.bucket for s in chunk}:
        prefix = f"buckets/{b}/" if b else ""
        for name, attr in (("latents", "latent"), ("latents_flip", "latent_flip")):
            if f"{prefix}{name}" not in group:
                continue
            arr = group[f"{prefix}{name}"]
            block = np.zeros((len(chunk), *arr.shape[1:]), dtype=np.int8)  # sparse: other rows stay 0
            for i, s in enumerate(chunk):
                if s.bucket == b:
                    block[i] = getattr(s, attr)
            arr[region] = block
    group["labels"][region] = np.array([s.label for s in chunk])
    group["keys"][region] = np.array([s.key for s in chunk])
    group["meta"][region] = np.array([json.dumps(_meta(s)) for s in chunk])
    group["valid"][region] = np.ones(len(chunk), dtype=bool)
    if "bucket" in group:
        group["bucket"][region] = np.array([s.bucket or "" for s in chunk])
    digest = hashlib.sha256("".join(s.key for s in chunk).encode()).hexdigest()
    return {
        "shard": shard,
        "name": f"latents.zarr#{offset}:{offset + len(chunk)}",
        "samples": len(chunk),
        "bytes": 0,
        "sha256": digest,
        "first_key": chunk[0].key,
        "last_key": chunk[-1].key,
    }


def keys_of(items) -> list[str]:
    """Keys of loader items: Batches of one sample (key a str) or of several (a list)."""
    out = []
    for item in items:
        out += item.key if isinstance(item.key, list) else [item.key]
    return out


def write_run_slowly(
    root: Path,
    samples: list[Sample],
    *,
    fmt: str,
    codec_hash: str,
    shard_size: int = 3,
    delay: float = 0.05,
    complete_flag: bool = True,
    hold_manifest: threading.Event | None = None,
) -> None:
    """A run committed shard by shard, `delay` seconds apart (markers as the real runtime writes them),
    then its manifest; complete_flag=False: an older writer (no "complete" in _run.json).
    hold_manifest: the manifest waits for this event (at most 60 s), so a reader started on a loaded
    machine still gets to read shards of the run in progress."""
    import time

    out = OutputRoot(str(root))
    root.mkdir(parents=True, exist_ok=True)
    settings = {
        "codec_hash": codec_hash,
        "preprocessing": {"size": 64},
        "sink": fmt,
        "shard_size": shard_size,
        "latent_format": "npy",
    }
    state = {"settings": settings, "settings_hash": "a" * 64, "listing_hash": "b" * 64, "appends": 0}
    out.write_json(RUN_STATE, state | ({"complete": False} if complete_flag else {}))
    chunks = [samples[i : i + shard_size] for i in range(0, len(samples), shard_size)]
    store = None
    if fmt == "zarr":
        store = _zarr_store(root, samples, len(chunks) * shard_size, shard_size)
        store.attrs.update(
            {
                "codec": {
                    "name": None,
                    "hash": codec_hash,
                    "config": {"kind": "2d", "J": 3, "latent_bits": 8},
                },
                "latent": {"dtype": "int8", "bits": 8, "shape": list(samples[0].latent.shape)},
            }
        )
    entries = []
    for shard, chunk in enumerate(chunks):
        time.sleep(delay)
        if fmt == "zarr":
            entry = _zarr_shard(store, shard, chunk, shard * shard_size)
        else:
            entry = _wds_shard(root, shard, chunk, any(s.bucket for s in samples))
        out.write_marker(
            ShardMarker(stats=entry, slot_offset=shard * shard_size, keys=[s.key for s in chunk])
        )
        entries.append(entry | {"errors": 0, "slot_offset": shard * shard_size})
    time.sleep(delay)
    if hold_manifest is not None:
        hold_manifest.wait(timeout=60)
    write_manifest(
        root,
        samples,
        entries,
        fmt=fmt,
        shard_size=shard_size,
        preprocessing={"size": 64},
        codec_hash=codec_hash,
    )
    if complete_flag:
        out.write_json(RUN_STATE, state | {"complete": True})
