"""The contract of every registered sink (pipeline.registry.SINKS), without Ray: determinism (same
samples, same bytes), abort and failed commits leave nothing visible, the stock library reads what was
written (webdataset / zarr), the project's loaders (the format entry's) read it back, the statistics
commit() returns describe the bytes on disk, and the entry's size model fits the bytes written.

A sink registered without an output_format entry, or without a stock reader and a failure injector
here, fails the first test: a new format comes with its contract.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import webdataset as wds
import zarr

from pipeline.formats import output_format
from pipeline.manifest import OutputRoot, RunIdentity, ShardMarker, build_manifest
from pipeline.registry import SINKS
from pipeline.sinks import EncodedSample, SinkSpec

SHARD = 4
LAYOUTS = ("plain", "flip", "buckets")
SHAPES = {"32x32": (12, 4, 4), "48x32": (12, 4, 6)}
CODEC = {
    "name": None,
    "hash": "c" * 64,
    "config": {"kind": "2d", "channels": 3, "J": 3, "latent_dim": 12, "latent_bits": 8},
}


def _samples(n: int, layout: str, seed: int = 0) -> list[EncodedSample]:
    """n samples with distinct latents and metadata of a real run's size (~700 bytes of JSON)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        bucket = sorted(SHAPES)[i % 3 == 2] if layout == "buckets" else None
        z = rng.integers(-127, 128, SHAPES[bucket or "32x32"], dtype=np.int8)
        key = f"n{seed:02d}_{i:05d}"
        meta = {
            "key": key,
            "source": f"file:///data/imagenet/train/n0144{i % 10:04d}/{key}_{'x' * 40}.JPEG",
            "label": i % 3,
            "class": f"n0144{i % 3:04d}",
            "cache_key": hashlib.sha256(key.encode()).hexdigest(),
            "source_sha256": hashlib.sha256(key.encode() + b"src").hexdigest(),
            "original_size": [500, 375],
            "resized_size": [341, 256],
            "crop_box": [42, 0, 298, 256],
            "input_size": [256, 256],
            "mode": "RGB",
            "fingerprint": f"size=123456;mtime={1700000000 + i};etag={'e' * 32}",
        } | ({"bucket": bucket} if bucket else {})
        out.append(
            EncodedSample(
                key=key,
                label=i % 3,
                latent=z,
                meta=meta,
                slot=i % SHARD,
                bucket=bucket,
                latent_flip=(-z).astype(np.int8) if layout == "flip" else None,
            )
        )
    return out


def _sink(name: str, root: Path, layout: str, total: int):
    sink = SINKS[name](SinkSpec(output=str(root), shard_size=SHARD, flip_pair=layout == "flip"))
    shape = dict(SHAPES) if layout == "buckets" else SHAPES["32x32"]
    sink.prepare(total, shape, {"codec": CODEC, "latent": {"dtype": "int8", "bits": 8, "shape": None}})
    return sink


def _write(name: str, root: Path, samples: list[EncodedSample], layout: str) -> list[tuple[int, Any]]:
    """Every shard of `samples` written and committed: [(slot offset, ShardStats)]."""
    sink = _sink(name, root, layout, len(samples))
    out = []
    for shard, start in enumerate(range(0, len(samples), SHARD)):
        writer = sink.open_shard(shard, start)
        for s in samples[start : start + SHARD]:
            writer.write(s)
        out.append((start, writer.commit()))
    return out


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- per-format oracles: the stock library's view of what a sink wrote ------------------------------
def _wds_read(root: Path, stats: dict) -> dict[str, tuple]:
    out = {}
    for name in [p["name"] for p in stats.get("parts") or []] or [stats["name"]]:
        for s in wds.WebDataset(str(root / name), shardshuffle=False):
            flip = np.load(io.BytesIO(s["latent_flip.npy"])) if "latent_flip.npy" in s else None
            out[s["__key__"]] = (
                np.load(io.BytesIO(s["latent.npy"])),
                flip,
                int(s["cls"]),
                json.loads(s["json"]),
            )
    return out


def _wds_check_stats(root: Path, stats: dict, offset: int) -> None:
    """bytes and sha256 are the tar files' (each part's, for buckets; the first part's sha256)."""
    parts = stats.get("parts") or [stats | {"keys_first": stats["first_key"]}]
    for p in parts:
        data = (root / p["name"]).read_bytes()
        assert len(data) == p["bytes"] and hashlib.sha256(data).hexdigest() == p["sha256"], p["name"]
    assert stats["bytes"] == sum(p["bytes"] for p in parts) and stats["sha256"] == parts[0]["sha256"]


def _zarr_read(root: Path, stats: dict) -> dict[str, tuple]:
    g = zarr.open_group(str(root / "latents.zarr"), mode="r")
    out = {}
    for row in np.flatnonzero(g["valid"][:]):
        p = f"buckets/{g['bucket'][row]}/" if "bucket" in g else ""
        flip = g[f"{p}latents_flip"][row] if f"{p}latents_flip" in g else None
        meta = json.loads(str(g["meta"][row]))
        out[str(g["keys"][row])] = (g[f"{p}latents"][row], flip, int(g["labels"][row]), meta)
    return {k: v for k, v in out.items() if k in _keys_of(stats)}


def _zarr_check_stats(root: Path, stats: dict, offset: int) -> None:
    """sha256 is of the shard's latent rows as stored (decoded by stock zarr) and its keys; bytes are
    the latent bytes of its rows (a content hash: Zarr's compressed chunks are an encoding detail)."""
    g = zarr.open_group(str(root / "latents.zarr"), mode="r")
    stop = min(offset + SHARD, g["valid"].shape[0])
    keys = [str(k) for k in g["keys"][offset:stop]]
    digest = hashlib.sha256()
    if "bucket" not in g:
        blocks = [g[a][offset:stop] for a in ("latents", "latents_flip") if a in g]
        assert stats["bytes"] == sum(b.nbytes for b in blocks)
    else:
        rows = [str(b) for b in g["bucket"][offset:stop]]
        blocks = []
        for part in stats["parts"]:
            b = part["bucket"]
            mine = [a for a in ("latents", "latents_flip") if f"buckets/{b}/{a}" in g]
            part_blocks = [g[f"buckets/{b}/{a}"][offset:stop] for a in mine]
            assert part["samples"] == rows.count(b)
            assert part["bytes"] == sum(x[0].nbytes for x in part_blocks) * rows.count(b)
            assert part["sha256"] == hashlib.sha256(b"".join(x.tobytes() for x in part_blocks)).hexdigest()
            blocks += part_blocks
        assert sorted(p["bucket"] for p in stats["parts"]) == sorted(set(rows))
    for b in blocks:
        digest.update(b.tobytes())
    digest.update("\n".join(keys).encode())
    assert digest.hexdigest() == stats["sha256"]


def _keys_of(stats: dict) -> set[str]:
    return set(stats["keys"]) if "keys" in stats else {stats["first_key"], stats["last_key"]}


def _wds_fail(root: Path, sink, samples) -> None:
    """A shard whose file cannot be created (a directory in its place): commit raises."""
    (root / sink.shard_name(0)).mkdir(parents=True)


def _zarr_fail(root: Path, sink, samples) -> None:
    """A sample whose latent does not fit the store: commit raises before writing anything."""
    samples[-1].latent = np.zeros((12, 2, 2), np.int8)


STOCK: dict[str, tuple[Callable, Callable]] = {
    "webdataset": (_wds_read, _wds_check_stats),
    "zarr": (_zarr_read, _zarr_check_stats),
}
FAIL: dict[str, Callable] = {"webdataset": _wds_fail, "zarr": _zarr_fail}
NAMES = sorted(SINKS)


def test_every_registered_sink_has_a_format_entry_and_a_contract_here():
    for name in NAMES:
        entry = output_format(name)
        assert entry.stream_loader().__name__.startswith("Latent"), name
        assert name in STOCK and name in FAIL, f"add the stock reader and a failure injector for {name!r}"
    with pytest.raises(ValueError, match="choose one of"):
        output_format("tfrecord")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_same_samples_give_identical_bytes(name, layout, tmp_path):
    stats = [_write(name, tmp_path / d, _samples(10, layout), layout) for d in ("a", "b")]
    assert [s.to_dict() for _, s in stats[0]] == [s.to_dict() for _, s in stats[1]]
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert a == b and a


@pytest.mark.parametrize("name", NAMES)
def test_abort_and_failed_commits_leave_nothing_visible(name, tmp_path):
    samples = _samples(SHARD, "plain")
    sink = _sink(name, tmp_path, "plain", SHARD)
    before = _tree(tmp_path)
    writer = sink.open_shard(0, 0)
    for s in samples:
        writer.write(s)
    writer.abort()
    assert _tree(tmp_path) == before
    FAIL[name](tmp_path, sink, samples)
    before = _tree(tmp_path)
    writer = sink.open_shard(0, 0)
    for s in samples:
        writer.write(s)
    with pytest.raises((OSError, ValueError)):
        writer.commit()
    assert _tree(tmp_path) == before  # no temporary file, no partial rows


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_stock_library_reads_what_was_written_and_the_statistics_describe_it(name, layout, tmp_path):
    samples = _samples(10, layout)
    read, check_stats = STOCK[name]
    got = {}
    for offset, stats in _write(name, tmp_path, samples, layout):
        d = stats.to_dict() | {"keys": stats.keys}
        check_stats(tmp_path, d, offset)
        part = read(tmp_path, d)
        assert sorted(part) == sorted(stats.keys) and stats.samples == len(part)
        assert (stats.first_key, stats.last_key) == (stats.keys[0], stats.keys[-1])
        got |= part
    for s in samples:
        z, flip, label, meta = got[s.key]
        assert np.array_equal(z, s.latent) and label == s.label and meta == s.meta
        assert (flip is None and s.latent_flip is None) or np.array_equal(flip, s.latent_flip)


def _commit_run(name: str, root: Path, samples: list[EncodedSample], layout: str) -> None:
    """Markers and the manifest, as the runtime's driver writes them, over the committed shards."""
    out = OutputRoot(str(root))
    markers = []
    for offset, stats in _write(name, root, samples, layout):
        marker = ShardMarker(stats=stats.to_dict(), slot_offset=offset, keys=stats.keys)
        out.write_marker(marker)
        markers.append(marker)
    settings = {
        "codec_hash": CODEC["hash"],
        "preprocessing": {"size": 32, "crop": "center"},
        "sink": name,
        "shard_size": SHARD,
        "latent_format": "npy",
    } | ({"flip_pair": True} if layout == "flip" else {})
    manifest = build_manifest(
        identity=RunIdentity(settings=settings, listing_hash="b" * 64),
        codec=CODEC,
        latent={"dtype": "int8", "bits": 8, "shape": None if layout == "buckets" else [12, 4, 4]},
        source={"kind": "synthetic"},
        label_map={"a": 0, "b": 1, "c": 2},
        markers=markers,
        inputs=len(samples),
        buckets={b: list(s) for b, s in SHAPES.items()} if layout == "buckets" else None,
    )
    out.write_manifest(manifest)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_format_entrys_loaders_read_it_back(name, layout, tmp_path):
    samples = _samples(10, layout)
    _commit_run(name, tmp_path, samples, layout)
    by_key = {s.key: s for s in samples}
    entry = output_format(name)
    options = {"flip": "pair"} if layout == "flip" else {}
    loaders = [entry.stream_loader()(str(tmp_path), output="int", with_meta=True, **options)]
    if entry.dataset_loader() is not None:
        loaders.append(entry.dataset_loader()(str(tmp_path), output="int", with_meta=True))
    for loader in loaders:
        streams = isinstance(loader, torch.utils.data.IterableDataset)
        items = list(loader) if streams else [loader[i] for i in range(len(loader))]
        assert sorted(b.key for b in items) == sorted(by_key), type(loader).__name__
        for b in items:
            z, y = b
            s = by_key[b.key]
            assert b.labels == s.label and b.meta == s.meta
            picks = [s.latent] + ([s.latent_flip] if "flip" in options else [])
            assert any(np.array_equal(z.numpy(), p) for p in picks) and y == b.labels


def _wds_measure(root: Path, shards: list) -> tuple[float, float]:
    """(bytes per sample, largest per-shard overhead): tar members counted from their headers."""
    members, overhead = 0, 0.0
    for _, stats in shards:
        path = root / stats.name
        with tarfile.open(path) as tar:
            mine = sum(512 + -(-m.size // 512) * 512 for m in tar.getmembers())
        members += mine
        overhead = max(overhead, path.stat().st_size - mine)
    return members / sum(s.samples for _, s in shards), overhead


def _zarr_measure(root: Path, shards: list) -> tuple[float, float]:
    """(bytes per sample, 0): the growth of the store's files from 8 to 24 rows (the rest is fixed)."""
    small = root.parent / f"{root.name}-8"
    _write("zarr", small, _samples(8, "plain"), "plain")
    grown = sum(len(b) for b in _tree(root).values()) - sum(len(b) for b in _tree(small).values())
    return grown / (sum(s.samples for _, s in shards) - 8), 0.0


MEASURE: dict[str, Callable] = {"webdataset": _wds_measure, "zarr": _zarr_measure}


@pytest.mark.parametrize("name", NAMES)
def test_the_size_model_fits_the_bytes_written(name, tmp_path):
    """The dry run's estimate (the format entry's size model) against the bytes on disk."""
    samples = _samples(24, "plain")
    meta_bytes = float(np.mean([len(json.dumps(s.meta, sort_keys=True)) for s in samples]))
    size = output_format(name).size
    per_sample, overhead = MEASURE[name](tmp_path / "out", _write(name, tmp_path / "out", samples, "plain"))
    model = size.bytes_per_sample(12 * 4 * 4, labelled=True, meta_bytes=meta_bytes)
    if output_format(name).coded_latents:  # stored as written: the model is the bytes
        assert abs(model - per_sample) / per_sample < 0.02, (model, per_sample)
    else:  # compressed by the store: the model (raw latents and strings) is an upper bound
        assert per_sample <= model < 3 * per_sample, (model, per_sample)
    assert overhead <= size.shard_overhead() + 1024
    assert size.bytes_per_sample(100, True, flip_pair=True) > size.bytes_per_sample(100, True)
    assert size.bytes_per_sample(100, True) > size.bytes_per_sample(100, False) or not size.shard_overhead()
