"""The sinks' bucket and flip-pair layouts, without Ray: part tars, their bytes, and the Zarr arrays."""

from __future__ import annotations

import json

import numpy as np
import pytest
import webdataset as wds
import zarr

from pipeline.sinks import EncodedSample, SinkSpec
from pipeline.sinks.webdataset import WebDatasetSink
from pipeline.sinks.zarr import ZarrSink

SHAPES = {"64x64": (12, 8, 8), "80x48": (12, 6, 10)}


def _samples(flip: bool = False, buckets: bool = True) -> list[EncodedSample]:
    rng = np.random.default_rng(0)
    out = []
    for slot, bucket in enumerate(["80x48", "64x64", "80x48", "64x64", "80x48"]):
        shape = SHAPES[bucket] if buckets else SHAPES["64x64"]
        z = rng.integers(-127, 128, shape, dtype=np.int8)
        out.append(
            EncodedSample(
                key=f"k{slot}",
                label=slot % 2,
                latent=z,
                meta={"key": f"k{slot}", "bucket": bucket} if buckets else {"key": f"k{slot}"},
                slot=slot,
                bucket=bucket if buckets else None,
                latent_flip=-z if flip else None,
            )
        )
    return out


def _write(sink, samples, shard=3, offset=0):
    writer = sink.open_shard(shard, offset)
    for s in samples:
        writer.write(s)
    return writer.commit()


def test_webdataset_one_tar_per_bucket_deterministic(tmp_path):
    stats = [
        _write(WebDatasetSink(SinkSpec(output=str(tmp_path / d))), _samples(flip=True)) for d in ("a", "b")
    ]
    assert stats[0].to_dict() == stats[1].to_dict()
    parts = stats[0].to_dict()["parts"]
    assert [p["name"] for p in parts] == ["shard-000003-b64x64.tar", "shard-000003-b80x48.tar"]
    assert [(p["samples"], p["keys_first"], p["keys_last"]) for p in parts] == [
        (2, "k1", "k3"),
        (3, "k0", "k4"),
    ]
    assert stats[0].samples == 5 and stats[0].bytes == sum(p["bytes"] for p in parts)
    for p in parts:
        assert (tmp_path / "a" / p["name"]).read_bytes() == (tmp_path / "b" / p["name"]).read_bytes()
        for s in wds.WebDataset(str(tmp_path / "a" / p["name"]), shardshuffle=False).decode():
            assert s["json"]["bucket"] == p["bucket"]
            assert s["latent.npy"].shape == SHAPES[p["bucket"]]
            np.testing.assert_array_equal(s["latent_flip.npy"], -s["latent.npy"])
    assert not (tmp_path / "a" / "shard-000003.tar").exists()


def test_webdataset_unbucketed_shard_is_unchanged(tmp_path):
    stats = _write(WebDatasetSink(SinkSpec(output=str(tmp_path))), _samples(buckets=False))
    assert stats.name == "shard-000003.tar" and "parts" not in stats.to_dict()
    names = [m for m in wds.WebDataset(str(tmp_path / stats.name), shardshuffle=False)]
    assert all("latent_flip.npy" not in s for s in names)


def test_zarr_prepare_takes_bucket_shapes_and_writes_sparse(tmp_path):
    sink = ZarrSink(SinkSpec(output=str(tmp_path), shard_size=5, flip_pair=True))
    sink.prepare(10, dict(SHAPES), {"note": "test"})
    stats = _write(sink, _samples(flip=True), shard=1, offset=5)
    group = zarr.open_group(str(tmp_path / "latents.zarr"), mode="r")
    assert [str(b) for b in group["bucket"][:].tolist()] == [""] * 5 + ["80x48", "64x64"] * 2 + ["80x48"]
    for b, shape in SHAPES.items():
        arr = group[f"buckets/{b}/latents"]
        assert arr.shape == (10, *shape) and arr.chunks == (1, *shape)
    samples = _samples(flip=True)
    for s in samples:
        np.testing.assert_array_equal(group[f"buckets/{s.bucket}/latents"][5 + s.slot], s.latent)
        np.testing.assert_array_equal(group[f"buckets/{s.bucket}/latents_flip"][5 + s.slot], -s.latent)
        other = "64x64" if s.bucket == "80x48" else "80x48"
        assert not group[f"buckets/{other}/latents"][5 + s.slot].any()
    assert json.loads(str(group["meta"][6:7][0]))["bucket"] == "64x64"
    assert {p["bucket"]: p["samples"] for p in stats.parts} == {"64x64": 2, "80x48": 3}
    with pytest.raises(ValueError, match="holds"):  # reopening with other buckets is refused
        sink.prepare(10, {"64x64": (12, 8, 8), "48x80": (12, 10, 6)}, {})


def test_webdataset_coded_flip_latents(tmp_path):
    samples = _samples(flip=True, buckets=False)
    for s in samples:
        s.latent_bytes, s.latent_flip_bytes = b"coded", b"coded-flip"
    stats = _write(WebDatasetSink(SinkSpec(output=str(tmp_path), latent_format="zstd")), samples)
    for s in wds.WebDataset(str(tmp_path / stats.name), shardshuffle=False):
        assert (s["latent.wlat"], s["latent_flip.wlat"]) == (b"coded", b"coded-flip")
        assert "latent.npy" not in s and "latent_flip.npy" not in s


def test_zarr_bucket_arrays_grow_for_append_runs(tmp_path):
    sink = ZarrSink(SinkSpec(output=str(tmp_path), shard_size=5))
    sink.prepare(5, dict(SHAPES), {})
    _write(sink, _samples(), shard=0, offset=0)
    sink.prepare(10, dict(SHAPES), {})  # an append run plans 5 more rows
    _write(sink, _samples(), shard=1, offset=5)
    group = zarr.open_group(str(tmp_path / "latents.zarr"), mode="r")
    assert group["bucket"].shape == (10,) and group["buckets/64x64/latents"].shape == (10, 12, 8, 8)
    rows = group["buckets/80x48/latents"][:]
    np.testing.assert_array_equal(rows[0], rows[5])  # the same samples in both shards
    assert "latents_flip" not in group["buckets/80x48"]
