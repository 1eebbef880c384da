"""Global order from (seed, epoch), equal work per rank, and exact resume at another world size."""

from __future__ import annotations

from collections import Counter

import pytest
from synth import keys_of, make_samples, write_run

from pipeline.loaders import LatentWebDataset, LatentZarrStream, merge_states

LOADERS = {"webdataset": LatentWebDataset, "zarr": LatentZarrStream}
N = 30


@pytest.fixture(params=sorted(LOADERS))
def run(request, tmp_path):
    fmt = request.param
    root = write_run(tmp_path / fmt, make_samples(N), fmt=fmt, shard_size=4)
    return LOADERS[fmt], str(root)


def test_same_seed_and_epoch_give_the_same_order(run):
    cls, root = run

    def order(seed, epoch):
        ds = cls(root, with_meta=True, seed=seed, shuffle_buffer=6)
        ds.set_epoch(epoch)
        return keys_of(ds)

    assert order(3, 1) == order(3, 1)
    assert order(3, 1) != order(3, 2)
    assert order(3, 1) != order(4, 1)
    assert sorted(order(3, 1)) == sorted(order(4, 7)) and len(set(order(3, 1))) == N


@pytest.mark.parametrize("world", [2, 3, 4])
def test_ranks_split_every_sample_once_with_equal_work(run, world):
    cls, root = run
    per_rank = [keys_of(cls(root, with_meta=True, seed=1, rank=r, world_size=world)) for r in range(world)]
    assert Counter(k for keys in per_rank for k in keys) == Counter(
        keys_of(cls(root, with_meta=True, seed=1))
    )
    assert sum(len(k) for k in per_rank) == N
    assert max(map(len, per_rank)) - min(map(len, per_rank)) <= 1
    batches = [list(cls(root, seed=1, batch_size=4, rank=r, world_size=world)) for r in range(world)]
    assert max(map(len, batches)) - min(map(len, batches)) <= 1


def _take(ds, steps):
    it = iter(ds)
    return keys_of([next(it) for _ in range(steps)])


def test_stop_at_step_k_with_two_ranks_resume_with_three(run):
    cls, root = run
    epoch = keys_of(cls(root, with_meta=True, seed=5, batch_size=3))
    ranks = [cls(root, with_meta=True, seed=5, batch_size=3, rank=r, world_size=2) for r in range(2)]
    seen = [k for ds in ranks for k in _take(ds, 2)]  # both ranks stop after step 2
    state = merge_states([ds.state_dict() for ds in ranks])
    rest = []
    for r in range(3):
        ds = cls(root, with_meta=True, seed=0, batch_size=3, rank=r, world_size=3)
        ds.load_state_dict(state)  # seed and epoch come from the state
        rest.append(keys_of(ds))
    assert Counter(seen + [k for keys in rest for k in keys]) == Counter(epoch)
    assert not set(seen) & {k for keys in rest for k in keys}
    assert max(map(len, rest)) - min(map(len, rest)) <= 3  # one batch at most


def test_resume_twice_across_world_sizes(run):
    cls, root = run
    epoch = Counter(keys_of(cls(root, with_meta=True, seed=2)))
    first = [cls(root, with_meta=True, seed=2, rank=r, world_size=2) for r in range(2)]
    seen = [k for ds in first for k in _take(ds, 3)]
    second = [cls(root, with_meta=True, rank=r, world_size=3) for r in range(3)]
    for ds in second:
        ds.load_state_dict([d.state_dict() for d in first])  # a list is merged
        seen += _take(ds, 2)
    last = cls(root, with_meta=True)
    last.load_state_dict(merge_states([d.state_dict() for d in second]))
    assert Counter(seen + keys_of(last)) == epoch


def test_dataloader_workers_resume_exactly(run):
    cls, root = run
    epoch = keys_of(cls(root, with_meta=True, seed=9, batch_size=2))
    loader = cls(root, with_meta=True, seed=9, batch_size=2).loader(num_workers=2)
    seen = []
    for step, batch in enumerate(loader):
        seen += keys_of([batch])
        if step == 4:
            break
    state = loader.state_dict()
    resumed = cls(root, with_meta=True, batch_size=2)
    resumed.load_state_dict(state)
    rest = keys_of(resumed.loader(num_workers=3))
    assert Counter(seen + rest) == Counter(epoch) and len(seen) == 10


def test_a_new_pass_after_a_finished_epoch_is_the_next_epoch(run):
    cls, root = run
    ds = cls(root, with_meta=True, seed=4)
    first, second = keys_of(ds), keys_of(ds)
    assert ds.epoch == 1 and sorted(first) == sorted(second) and first != second
    ds.set_epoch(0)
    assert keys_of(ds) == first


def test_state_of_another_sample_set_is_refused(run, tmp_path):
    cls, root = run
    other = write_run(
        tmp_path / "other", make_samples(N - 2), fmt="zarr" if cls is LatentZarrStream else "webdataset"
    )
    state = cls(str(other)).state_dict()
    with pytest.raises(ValueError, match="another set of samples"):
        cls(root).load_state_dict(state)


def test_resampled_is_an_infinite_stream_of_whole_shards(run):
    cls, root = run
    it = iter(cls(root, resampled=True, batch_size=3, with_meta=True, seed=1))
    keys = keys_of([next(it) for _ in range(3 * N)])
    assert len(keys) == 9 * N and set(keys) <= set(keys_of(cls(root, with_meta=True)))
    assert len(set(keys)) > N // 2
