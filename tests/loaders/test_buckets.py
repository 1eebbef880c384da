"""Bucket batching (C1): one latent shape per batch, buckets drawn in proportion, deterministic, ranks."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from synth import keys_of, make_samples, write_run

from pipeline.loaders import LatentWebDataset, LatentZarrStream, RunInfo, merge_states

LOADERS = {"webdataset": LatentWebDataset, "zarr": LatentZarrStream}
BUCKETS = {"32x32": (3, 4, 4), "48x32": (3, 4, 6), "32x48": (3, 6, 4)}
WEIGHTS = [0.6, 0.3, 0.1]
N, B = 240, 4


@pytest.fixture(scope="module", params=sorted(LOADERS))
def run(request, tmp_path_factory):
    fmt = request.param
    samples = make_samples(N, buckets=BUCKETS, weights=WEIGHTS)
    root = write_run(tmp_path_factory.mktemp(fmt), samples, fmt=fmt, shard_size=16)
    return LOADERS[fmt], str(root), samples


def test_shard_files_list_one_tar_per_bucket_part(run):
    cls, root, samples = run
    if cls is not LatentWebDataset:
        pytest.skip("tars only")
    files = RunInfo.open(root).shard_files()
    assert sum(f.samples for f in files) == N
    assert all(f.url.endswith(f"-b{f.bucket}.tar") for f in files)
    assert {f.bucket for f in files} == set(BUCKETS)


def test_every_batch_has_one_shape_and_every_sample_comes_once(run):
    cls, root, samples = run
    batches = list(cls(root, with_meta=True, batch_size=B, seed=1))
    by_key = {s.key: s for s in samples}
    for b in batches:
        shapes = {by_key[m["key"]].latent.shape for m in b.meta}
        assert len(shapes) == 1 and tuple(b.latents.shape[1:]) == shapes.pop()
        assert len({m["bucket"] for m in b.meta}) == 1
    assert Counter(keys_of(batches)) == Counter(s.key for s in samples)
    # each bucket: full batches, then at most one partial one
    counts = Counter(s.bucket for s in samples)
    per_bucket = Counter(b.meta[0]["bucket"] for b in batches)
    assert per_bucket == {b: -(-n // B) for b, n in counts.items()}


def test_buckets_are_drawn_in_proportion_to_their_sizes(run):
    cls, root, samples = run
    counts = Counter(s.bucket for s in samples)
    batches = [b.meta[0]["bucket"] for b in cls(root, with_meta=True, batch_size=B, seed=2)]
    half = Counter(batches[: len(batches) // 2])  # not one bucket after another: mixed all along
    for bucket, n in counts.items():
        assert abs(half[bucket] / (len(batches) // 2) - n / N) < 0.15, (bucket, half, counts)


def test_bucket_order_is_deterministic_from_the_seed(run):
    cls, root, _ = run

    def order(seed, epoch=0):
        ds = cls(root, with_meta=True, batch_size=B, seed=seed)
        ds.set_epoch(epoch)
        return keys_of(ds)

    assert order(1) == order(1)
    assert order(1) != order(2) and order(1, 0) != order(1, 1)


def test_bucketed_ranks_split_batches_and_resume(run):
    cls, root, samples = run
    epoch = Counter(keys_of(cls(root, with_meta=True, batch_size=B, seed=3)))
    ranks = [cls(root, with_meta=True, batch_size=B, seed=3, rank=r, world_size=2) for r in range(2)]
    seen = []
    for ds in ranks:
        it = iter(ds)
        for _ in range(5):
            batch = next(it)
            assert len({m["bucket"] for m in batch.meta}) == 1
            seen += batch.key
    state = merge_states([ds.state_dict() for ds in ranks])
    rest = []
    sizes = []
    for r in range(3):
        ds = cls(root, with_meta=True, batch_size=B, rank=r, world_size=3)
        ds.load_state_dict(state)
        batches = list(ds)
        sizes.append(len(batches))
        rest += keys_of(batches)
    assert Counter(seen + rest) == epoch
    assert max(sizes) - min(sizes) <= 1  # equal work: batches per rank differ by at most one


def test_drop_last_keeps_only_full_batches(run):
    cls, root, samples = run
    batches = list(cls(root, batch_size=B, drop_last=True))
    assert all(len(b.labels) == B for b in batches)
    counts = Counter(s.bucket for s in samples)
    assert len(batches) == sum(n // B for n in counts.values())


def test_int_latents_of_buckets_are_the_stored_ones(run):
    cls, root, samples = run
    by_key = {s.key: s for s in samples}
    for b in cls(root, output="int", batch_size=B):
        for zi, key in zip(b.latents, b.key, strict=True):
            assert np.array_equal(zi.numpy(), by_key[key].latent)
