"""The loaders over outputs the pipeline writes (local Ray): resume 2 -> 3 ranks on WebDataset and
Zarr, and a bucketed, flip-paired run with statistics read back through every loader option."""

from __future__ import annotations

import io
import json
from collections import Counter

import numpy as np
import pytest
import torch
import webdataset as wds
import zarr
from synth import keys_of

from pipeline.loaders import LatentWebDataset, LatentZarrStream, RunInfo, merge_states

pytestmark = pytest.mark.slow
LOADERS = {"webdataset": LatentWebDataset, "zarr": LatentZarrStream}
N = 20


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_codec, ray_session):
    from pipeline.config import DEFAULT_IMAGE_INPUT, EncodeConfig, ImageSettings
    from pipeline.runtime import run_encode
    from pipeline.sinks import SinkSpec

    tmp = tmp_path_factory.mktemp("real")
    out = {}
    common = {"input": DEFAULT_IMAGE_INPUT, "codec": small_codec, "limit": N, "progress": False}
    square, buckets = {"size": 64}, {"buckets": "64x64,96x64,64x96"}
    for name, fmt, image, sink in [
        ("webdataset", "webdataset", square, {"shard_size": 3}),
        ("zarr", "zarr", square, {"shard_size": 3}),
        ("buckets", "webdataset", buckets, {"flip_pair": True, "shard_size": 4}),
        ("zbuckets", "zarr", buckets, {"flip_pair": True, "shard_size": 4}),
    ]:
        sink = SinkSpec(output=str(tmp / name), format=fmt, **sink)
        summary = run_encode(EncodeConfig(sink=sink, image=ImageSettings(**image), **common))
        assert summary.written == N and summary.errors == 0
        out[name] = str(tmp / name)
    return out


def _stock_latents(root: str) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """key -> (latent, latent_flip) read with the stock webdataset / zarr libraries only."""
    if (RunInfo.open(root).manifest["run"]["sink"]) == "webdataset":
        urls = RunInfo.open(root).shard_urls()
        return {
            s["__key__"]: (
                np.load(io.BytesIO(s["latent.npy"])),
                np.load(io.BytesIO(s["latent_flip.npy"])) if "latent_flip.npy" in s else None,
            )
            for s in wds.WebDataset(urls, shardshuffle=False)
        }
    g = zarr.open_group(f"{root}/latents.zarr", mode="r")
    out = {}
    for row in np.flatnonzero(g["valid"][:]):
        b = str(g["bucket"][row]) if "bucket" in g else ""
        p = f"buckets/{b}/" if b else ""
        flip = g[f"{p}latents_flip"][row] if f"{p}latents_flip" in g else None
        out[str(g["keys"][row])] = (g[f"{p}latents"][row], flip)
    return out


@pytest.mark.parametrize("fmt", sorted(LOADERS))
def test_real_run_stop_with_two_ranks_resume_with_three(runs, fmt):
    cls, root = LOADERS[fmt], runs[fmt]
    epoch = keys_of(cls(root, with_meta=True, seed=7, batch_size=2))
    assert sorted(epoch) == sorted(_stock_latents(root))
    ranks = [cls(root, with_meta=True, seed=7, batch_size=2, rank=r, world_size=2) for r in range(2)]
    seen = []
    for ds in ranks:
        it = iter(ds)
        seen += keys_of([next(it) for _ in range(2)])
    rest = []
    for r in range(3):
        ds = cls(root, with_meta=True, batch_size=2, rank=r, world_size=3)
        ds.load_state_dict(merge_states([d.state_dict() for d in ranks]))
        rest += keys_of(ds)
    assert Counter(seen + rest) == Counter(epoch) and len(seen) == 8


@pytest.mark.parametrize("name", ["buckets", "zbuckets"])
def test_real_bucketed_flip_pair_run(runs, name):
    root = runs[name]
    cls = LatentWebDataset if name == "buckets" else LatentZarrStream
    info = RunInfo.open(root)
    stock = _stock_latents(root)
    assert info.manifest.get("buckets") and len(stock) == N
    flipped = 0
    batches = list(cls(root, output="int", batch_size=3, flip="pair", with_meta=True, seed=1))
    for b in batches:
        assert len({m["bucket"] for m in b.meta}) == 1
        for zi, key in zip(b.latents, b.key, strict=True):
            latent, flip = stock[key]
            assert np.array_equal(zi.numpy(), flip if np.array_equal(zi.numpy(), flip) else latent)
            flipped += np.array_equal(zi.numpy(), flip) and not np.array_equal(flip, latent)
    assert Counter(keys_of(batches)) == Counter(list(stock)) and 0 < flipped < N
    # normalize with the run's statistics: standardized per channel over the whole run
    z = torch.cat(
        [
            z.flatten(2).transpose(1, 2).reshape(-1, z.shape[1])
            for z, _ in cls(root, batch_size=4, normalize=True)
        ]
    )
    assert z.mean(0).abs().max() < 1e-3 and (z.std(0) - 1).abs().max() < 1e-2
    stats = info.manifest["statistics"]
    assert json.loads(json.dumps(stats))["count"] >= N
