"""Flip pairs (C2), normalize (C3), superseded entries (C4), audio masks (C6), several runs."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from synth import keys_of, make_samples, statistics, write_run

from pipeline.codec.bottleneck import Compander
from pipeline.loaders import LatentWebDataset, LatentZarrStream, MixedRunsError
from pipeline.loaders.common import flip_choice

LOADERS = {"webdataset": LatentWebDataset, "zarr": LatentZarrStream}
FMTS = sorted(LOADERS)


@pytest.mark.parametrize("fmt", FMTS)
def test_flip_pair_picks_per_sample_and_epoch_from_the_seed(fmt, tmp_path):
    samples = make_samples(40, flip=True)
    root = str(write_run(tmp_path / fmt, samples, fmt=fmt))
    by_key = {s.key: s for s in samples}

    def picks(seed, epoch):
        ds = LOADERS[fmt](root, output="int", with_meta=True, flip="pair", seed=seed)
        ds.set_epoch(epoch)
        out = {}
        for b in ds:
            z, s = b.latents, by_key[b.key]
            flipped = np.array_equal(z.numpy(), s.latent_flip)
            assert flipped or np.array_equal(z.numpy(), s.latent)
            out[s.key] = flipped
        return out

    a = picks(1, 0)
    assert a == picks(1, 0) and a != picks(1, 1) and a != picks(2, 0)
    assert a == {k: flip_choice(1, 0, k) for k in by_key}
    assert 10 < sum(a.values()) < 30  # about half
    assert all(
        np.array_equal(b.latents.numpy(), by_key[b.key].latent) for b in LOADERS[fmt](root, output="int")
    )


@pytest.mark.parametrize("fmt", FMTS)
def test_flip_pair_needs_stored_flips(fmt, tmp_path):
    root = str(write_run(tmp_path / fmt, make_samples(8), fmt=fmt))
    with pytest.raises(KeyError, match="flip-pair"):
        list(LOADERS[fmt](root, flip="pair"))


@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("output", ["int", "float"])
def test_normalize_uses_the_statistics_of_its_output(fmt, output, tmp_path):
    samples = make_samples(24)
    root = str(write_run(tmp_path / fmt, samples, fmt=fmt, with_statistics=True))
    stats = statistics(samples)
    prefix = "" if output == "int" else "dequantized_"
    mean, std = torch.tensor(stats[f"{prefix}mean"]), torch.tensor(stats[f"{prefix}std"])
    by_key = {s.key: s for s in samples}
    compander = Compander(8)
    values = []
    for batch in LOADERS[fmt](root, output=output, normalize=True):
        z = batch.latents
        raw = torch.from_numpy(by_key[batch.key].latent).float()
        x = raw if output == "int" else compander.to_normal(raw)
        torch.testing.assert_close(z, (x - mean[:, None, None]) / std[:, None, None])
        values.append(z.flatten(1))
    allv = torch.cat(values, 1)
    torch.testing.assert_close(allv.mean(1), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(allv.std(1, correction=0), torch.ones(3), atol=1e-4, rtol=0)


def test_normalize_needs_statistics(tmp_path):
    root = str(write_run(tmp_path / "r", make_samples(8)))
    with pytest.raises(ValueError, match="statistics"):
        LatentWebDataset(root, normalize=True)


@pytest.mark.parametrize("fmt", FMTS)
def test_superseded_entries_are_never_yielded(fmt, tmp_path):
    samples = make_samples(20)
    # s0001 (shard 0) and s0006 (shard 1) were re-encoded later: their newer copies are s0017, s0018 here
    superseded = [{"key": "s0001", "shard": 0, "by_shard": 4}, {"key": "s0006", "shard": 1, "by_shard": 4}]
    root = str(write_run(tmp_path / fmt, samples, fmt=fmt, superseded=superseded))
    cls = LOADERS[fmt]
    keys = keys_of(cls(root, with_meta=True))
    assert Counter(keys) == Counter(s.key for s in samples if s.key not in ("s0001", "s0006"))
    ranks = [keys_of(cls(root, with_meta=True, rank=r, world_size=3)) for r in range(3)]
    assert (
        Counter(k for r in ranks for k in r) == Counter(keys)
        and max(map(len, ranks)) - min(map(len, ranks)) <= 1
    )
    assert cls(root).num_samples == 18


@pytest.mark.parametrize("fmt", FMTS)
def test_audio_mask_marks_the_valid_latent_steps(fmt, tmp_path):
    samples = make_samples(12, audio_steps=10)
    root = str(write_run(tmp_path / fmt, samples, fmt=fmt, kind="1d"))
    by_key = {s.key: s for s in samples}
    batches = list(LOADERS[fmt](root, output="int", batch_size=5, with_meta=True))
    for b in batches:
        z, labels, mask, metas = b.latents, b.labels, b.mask, b.meta
        assert mask.shape == (len(labels), 10) == (z.shape[0], z.shape[-1]) and mask.dtype == torch.bool
        for m, row in zip(metas, mask, strict=True):
            valid = by_key[m["key"]].meta["valid_length"]
            assert row.tolist() == [t * 8 < valid for t in range(10)]
    assert sum(len(b.labels) for b in batches) == 12
    z, label = sample = next(iter(LOADERS[fmt](root)))  # single samples: (T,) mask
    assert sample.mask.shape == (10,) and z.shape == (2, 10) and isinstance(label, int)


@pytest.mark.parametrize("fmt", FMTS)
def test_several_runs_read_as_one(fmt, tmp_path):
    a, b = make_samples(10, seed=1), make_samples(14, seed=2)
    for s in b:
        s.key = "b" + s.key
    roots = [str(write_run(tmp_path / "a", a, fmt=fmt)), str(write_run(tmp_path / "b", b, fmt=fmt))]
    cls = LOADERS[fmt]
    keys = keys_of(cls(roots, with_meta=True, seed=3))
    assert Counter(keys) == Counter(s.key for s in a + b)
    ranks = [cls(roots, with_meta=True, rank=r, world_size=2) for r in range(2)]
    it = [iter(r) for r in ranks]
    seen = [k for i in it for k in keys_of([next(i) for _ in range(3)])]
    resumed = cls(roots, with_meta=True)
    resumed.load_state_dict([r.state_dict() for r in ranks])
    assert Counter(seen + keys_of(resumed)) == Counter(keys)


@pytest.mark.parametrize("fmt", FMTS)
def test_runs_of_other_codecs_or_preprocessing_are_refused(fmt, tmp_path):
    samples = make_samples(6)
    base = str(write_run(tmp_path / "base", samples, fmt=fmt))
    codec = str(write_run(tmp_path / "codec", samples, fmt=fmt, codec_hash="d" * 64))
    prep = str(write_run(tmp_path / "prep", samples, fmt=fmt, preprocessing={"size": 128, "crop": "center"}))
    cls = LOADERS[fmt]
    with pytest.raises(MixedRunsError, match=r"codec hash \(cccccccccccc vs dddddddddddd\)"):
        cls([base, codec])
    with pytest.raises(MixedRunsError, match="preprocessing keys size"):
        cls([base, prep])
    assert len(keys_of(cls([base, prep], allow_mixed=True, with_meta=True))) == 12
