"""Latent statistics in the manifest (contract C3), checked against the latents read back with the
stock libraries (webdataset, zarr), computed here independently of pipeline.statistics."""

from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest
import torch
import zarr
from e2e_helpers import encode, read_manifest, read_webdataset


def _expected(latents: list[np.ndarray], bits: int) -> dict:
    """The statistics of these int8 latents (C, ...) straight from the values."""
    from pipeline.codec.bottleneck import Compander

    per_channel = np.concatenate([z.reshape(z.shape[0], -1) for z in latents], axis=1)  # (C, positions)
    lo = -(2 ** (bits - 1))
    hist = [np.bincount(row.astype(np.int64) - lo, minlength=2**bits).tolist() for row in per_channel]
    x = per_channel.astype(np.float64)
    dq = Compander(bits).to_normal(torch.from_numpy(x)).numpy()
    return {
        "count": len(latents),
        "channels": per_channel.shape[0],
        "positions": per_channel.shape[1],
        "histogram_offset": lo,
        "histogram": hist,
        "min": per_channel.min(axis=1).tolist(),
        "max": per_channel.max(axis=1).tolist(),
        "mean": x.mean(axis=1),
        "std": x.std(axis=1),
        "dequantized_mean": dq.mean(axis=1),
        "dequantized_std": dq.std(axis=1),
    }


def _check(stats: dict, expected: dict) -> None:
    for name in ("count", "channels", "positions", "histogram_offset", "histogram", "min", "max"):
        assert stats[name] == expected[name], name
    for name in ("mean", "std", "dequantized_mean", "dequantized_std"):
        np.testing.assert_allclose(stats[name], expected[name], rtol=1e-9, atol=1e-9, err_msg=name)


def test_webdataset_statistics_match_the_latents(reference_run):
    manifest = read_manifest(reference_run)
    latents = [s["latent.npy"] for s in read_webdataset(reference_run)]
    assert len(latents) == manifest["totals"]["written"] == 24
    stats = manifest["statistics"]
    _check(stats, _expected(latents, manifest["latent"]["bits"]))
    assert stats["channels"] == 12 and stats["positions"] == 24 * 8 * 8
    # the merge is exact whatever the order of the shards' markers
    from pipeline.statistics import merge_statistics

    parts = [
        json.loads(p.read_text())["statistics"] for p in sorted((reference_run / "_shards").glob("*.json"))
    ]
    assert sum(p["samples"] for p in parts) == 24
    orders = list(itertools.permutations(parts))
    for order in random.Random(0).sample(orders, 5) + [tuple(reversed(parts))]:
        assert merge_statistics(list(order), manifest["latent"]["bits"]) == stats


@pytest.mark.slow
def test_zarr_statistics_and_cache_keys(ray_session, corpus, klt_codec, tmp_path):
    output = tmp_path / "zarr"
    summary = encode(corpus, output, klt_codec, sink={"format": "zarr"})
    assert summary.written == 24
    manifest = read_manifest(output)
    group = zarr.open_group(str(output / "latents.zarr"), mode="r")
    valid = group["valid"][:]
    latents = group["latents"][:][valid]
    _check(manifest["statistics"], _expected(list(latents), manifest["latent"]["bits"]))
    # one cache key per row, the sample's own; "" where the input failed
    cache_keys, metas = group["cache_keys"][:], group["meta"][:]
    assert [k for k, v in zip(cache_keys, valid, strict=True) if not v] == [""]
    for key, meta, ok in zip(cache_keys, metas, valid, strict=True):
        if ok:
            assert key == json.loads(meta)["cache_key"]
    assert len({k for k in cache_keys if k}) == 24
    # what append runs read back to take superseded samples out of the statistics
    from pipeline.sinks import SinkSpec
    from pipeline.sinks.zarr import ZarrSink

    sink = ZarrSink(SinkSpec(output=str(output), shard_size=manifest["run"]["shard_size"]))
    rows = group["latents"][:]
    keys = list(group["keys"][:])
    for entry in manifest["shards"][::3]:
        key = entry["last_key"]
        z = sink.read_latent(entry, entry["slot_offset"], key)
        np.testing.assert_array_equal(z, rows[keys.index(key)])


@pytest.mark.parametrize("bits", [8, 5])
def test_merged_histograms_of_variable_shapes_are_exact(bits):
    """Latents of different sizes (crop none, buckets, audio) split over shards in any grouping."""
    from pipeline.statistics import HistogramAccumulator, merge_statistics

    rng = np.random.default_rng(bits)
    m = 2 ** (bits - 1) - 1
    latents = [
        np.clip(rng.normal(0, m / 2, size=(4, h, w)).round(), -m, m).astype(np.int8)
        for h, w in rng.integers(1, 9, size=(30, 2))
    ]
    expected = _expected(latents, bits)
    for seed in range(3):
        cuts = sorted(random.Random(seed).sample(range(1, len(latents)), 4))
        parts = []
        for group in np.split(np.arange(len(latents)), cuts):
            acc = HistogramAccumulator(bits)
            for i in group:
                acc.add(latents[i])
            parts.append(json.loads(json.dumps(acc.to_dict())))  # as stored in a marker
        random.Random(seed).shuffle(parts)
        _check(merge_statistics(parts + [None], bits), expected)


@pytest.mark.parametrize("latent_format", ["npy", "zstd"])
def test_superseded_latents_are_read_back_for_their_statistics(klt_codec, tmp_path, latent_format):
    """What an append run takes out of the statistics: the old latent of each replaced sample, read
    back from its committed shard (.npy or entropy-coded .wlat), in process (no Ray needed)."""
    from pipeline.codec import load
    from pipeline.manifest import ShardMarker
    from pipeline.runtime.plan import ShardTask
    from pipeline.runtime.superseded import attach_superseded_statistics
    from pipeline.sinks import EncodedSample, SinkSpec
    from pipeline.sinks.webdataset import WebDatasetSink
    from pipeline.sources.base import SourceItem
    from pipeline.statistics import HistogramAccumulator

    codec = load(str(klt_codec))
    rng = np.random.default_rng(0)
    latents = {k: rng.integers(-127, 128, size=(12, 8, 8)).astype(np.int8) for k in ("a", "b", "c")}
    sink = WebDatasetSink(SinkSpec(output=str(tmp_path), latent_format=latent_format))
    writer = sink.open_shard(0, 0)
    for key, z in latents.items():
        coded = None if latent_format == "npy" else codec.to_bytes(torch.from_numpy(z), method=latent_format)
        writer.write(EncodedSample(key=key, label=None, latent=z, meta={"key": key}, latent_bytes=coded))
    stats = writer.commit()
    marker = ShardMarker(stats=stats.to_dict(), slot_offset=0, keys=stats.keys)

    items = tuple(SourceItem(key=k, uri=f"mem://{k}") for k in ("a", "x", "c"))
    [task] = attach_superseded_statistics(
        [ShardTask(shard=1, slot_offset=4, items=items)], {"a": marker, "c": marker}, sink, codec
    )
    expected = HistogramAccumulator(codec.config.latent_bits)
    expected.add(latents["a"])
    expected.add(latents["c"])
    assert task.superseded_statistics == expected.to_dict()
