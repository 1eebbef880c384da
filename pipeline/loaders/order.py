"""The global sample order of an epoch, its split across ranks and workers, and what resume remembers.

Samples are numbered 0..N-1 in catalog order (run, shard, tar part, position in the tar / Zarr row).
An epoch's order is a function of (seed, epoch) only:

    tars (or Zarr shards) shuffled -> samples in tar order -> shuffled within blocks of `block` samples

(Zarr, which reads any row cheaply, shuffles all samples at once.) With bucket batching the order is
then cut into batches of one bucket each, and the batches are interleaved by a seeded permutation of
the multiset of their buckets, so buckets are drawn in proportion to their sizes.

The epoch is a sequence of *units* (a sample, or a batch: consecutive positions, or one bucket's)
over positions 0..N-1 of that order. What remains of it (units not consumed yet) is split in
contiguous ranges, first across ranks (sizes differ by at most one unit), then across each rank's
DataLoader workers. Resume remembers the
consumed positions as ranges, so it works with any new number of ranks or workers: the remaining
units are simply split again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STATE_VERSION = 1


@dataclass(frozen=True)
class Catalog:
    """The committed, live samples of one or more runs, in canonical order (arrays of length N)."""

    group: np.ndarray  # int: the read unit of each sample (a tar, or a Zarr shard), canonical order
    bucket: np.ndarray  # int: bucket index (-1: no bucket)
    bucket_names: tuple[str, ...] = ()
    ident: str = ""  # identifies the sample set: a state dict only resumes the catalog it came from

    def __len__(self) -> int:
        return len(self.group)


def fingerprint(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(np.ascontiguousarray(p).tobytes() if isinstance(p, np.ndarray) else repr(p).encode())
        h.update(b"|")
    return h.hexdigest()[:16]


def _rng(seed: int, epoch: int, *extra: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch & 0xFFFFFFFF, *extra])


def sample_order(cat: Catalog, seed: int, epoch: int, *, shuffle_groups: bool, block: int) -> np.ndarray:
    """Sample indices in epoch order (see the module docstring)."""
    n = len(cat)
    rng = _rng(seed, epoch)
    if shuffle_groups and n:
        groups = np.unique(cat.group)
        rank = np.empty(groups.max() + 1, dtype=np.int64)
        rank[groups[rng.permutation(len(groups))]] = np.arange(len(groups))
        order = np.lexsort((np.arange(n), rank[cat.group]))  # groups shuffled, tar order inside
    else:
        order = np.arange(n)
    if block > 1:
        order = order.copy()
        for start in range(0, n, block):
            order[start : start + block] = rng.permutation(order[start : start + block])
    return order


@dataclass(frozen=True)
class EpochOrder:
    """Positions 0..N-1 of the epoch -> sample index, and the units (position ranges) that make the epoch."""

    samples: np.ndarray  # position -> sample index
    unit_starts: np.ndarray  # unit u covers positions [unit_starts[u], unit_starts[u+1])

    @property
    def units(self) -> int:
        return len(self.unit_starts) - 1


def epoch_order(
    cat: Catalog,
    seed: int,
    epoch: int,
    *,
    shuffle_groups: bool,
    block: int,
    batch: int | None = None,
    by_bucket: bool = False,
    drop_last: bool = False,
) -> EpochOrder:
    """Units: samples (no batch), batches of consecutive positions, or batches of one bucket each."""
    order = sample_order(cat, seed, epoch, shuffle_groups=shuffle_groups, block=block)
    if not batch:
        return EpochOrder(order, np.arange(len(order) + 1))
    if not by_bucket:
        stop = len(order) - len(order) % batch if drop_last else len(order)
        return EpochOrder(order[:stop], np.append(np.arange(0, stop, batch), stop))
    bucket_batch = batch
    batches: list[np.ndarray] = []
    labels: list[int] = []
    for b in np.unique(cat.bucket[order]):
        members = order[cat.bucket[order] == b]  # the bucket's samples, in epoch order
        for start in range(0, len(members), bucket_batch):
            batch = members[start : start + bucket_batch]
            if drop_last and len(batch) < bucket_batch:
                continue
            batches.append(batch)
            labels.append(int(b))
    # a seeded permutation of the batches: each bucket keeps its own order, and buckets come in
    # proportion to their number of batches anywhere in the epoch
    perm = _rng(seed, epoch, 1).permutation(len(batches))
    by_bucket: dict[int, list[np.ndarray]] = {}
    for b, batch in zip(labels, batches, strict=True):
        by_bucket.setdefault(b, []).append(batch)
    slots = [labels[i] for i in perm]
    cursor = dict.fromkeys(by_bucket, 0)
    ordered = []
    for b in slots:
        ordered.append(by_bucket[b][cursor[b]])
        cursor[b] += 1
    sizes = np.array([len(x) for x in ordered], dtype=np.int64)
    samples = np.concatenate(ordered) if ordered else np.zeros(0, dtype=np.int64)
    return EpochOrder(samples, np.concatenate([[0], np.cumsum(sizes)]))


# --- consumed positions ---------------------------------------------------------------------------
def to_ranges(positions: np.ndarray) -> list[list[int]]:
    """Sorted unique positions -> [[start, stop), ...]."""
    p = np.unique(np.asarray(positions, dtype=np.int64))
    if not len(p):
        return []
    breaks = np.flatnonzero(np.diff(p) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(p)]])
    return [[int(p[a]), int(p[b - 1]) + 1] for a, b in zip(starts, stops, strict=True)]


def from_ranges(ranges: list[list[int]], n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    for a, b in ranges:
        mask[a:b] = True
    return mask


@dataclass
class LoaderState:
    """What resume needs: (seed, epoch), the sample set's identity, and the consumed positions."""

    seed: int
    epoch: int
    ident: str
    samples: int
    consumed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # mask over positions

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "epoch": self.epoch,
            "ident": self.ident,
            "samples": self.samples,
            "consumed": to_ranges(np.flatnonzero(self.consumed)),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoaderState:
        if d.get("version") != STATE_VERSION:
            raise ValueError(f"unknown loader state version {d.get('version')!r}")
        return cls(d["seed"], d["epoch"], d["ident"], d["samples"], from_ranges(d["consumed"], d["samples"]))


def merge_states(states: list[dict[str, Any]]) -> dict[str, Any]:
    """The state of a whole job from its ranks' states (e.g. gathered with all_gather_object)."""
    parsed = [LoaderState.from_dict(s) for s in states]
    first = parsed[0]
    for s in parsed[1:]:
        if (s.seed, s.epoch, s.ident, s.samples) != (first.seed, first.epoch, first.ident, first.samples):
            raise ValueError("these loader states come from different epochs, seeds or sample sets")
    consumed = np.logical_or.reduce([s.consumed for s in parsed])
    return LoaderState(first.seed, first.epoch, first.ident, first.samples, consumed).to_dict()


def split_remaining(
    order: EpochOrder, consumed: np.ndarray, rank: int, world: int, worker: int, workers: int
) -> list[np.ndarray]:
    """The units (arrays of positions, unconsumed ones only) of one rank's worker.

    Remaining units are cut in `world` contiguous ranges whose sizes differ by at most one, then the
    rank's range in `workers` ranges the same way."""
    starts, stops = order.unit_starts[:-1], order.unit_starts[1:]
    if len(starts) == len(order.samples):  # one sample per unit: all at once, no per-unit arrays
        left = np.flatnonzero(~consumed) if len(consumed) else np.arange(len(starts))
        mine = np.array_split(np.array_split(left, world)[rank], workers)[worker]
        return [mine] if len(mine) else []
    if len(consumed):
        done = np.add.reduceat(consumed.astype(np.int64), starts) if len(starts) else np.zeros(0)
        done = np.where(stops > starts, done, 0)
        left = np.flatnonzero(done < (stops - starts))
    else:
        left = np.arange(len(starts))
    mine = np.array_split(left, world)[rank]
    mine = np.array_split(mine, workers)[worker]
    units = []
    for u in mine:
        pos = np.arange(starts[u], stops[u])
        if len(consumed):
            pos = pos[~consumed[pos]]
        units.append(pos)
    return units
