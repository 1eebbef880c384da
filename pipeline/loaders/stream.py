"""What both streaming loaders share: the epoch order, rank/worker splitting, resume state, follow mode,
bucket batching and the per-sample transforms (flip pairs, normalization, audio masks).

A subclass says how to list its samples (`_build_catalog`) and how to read some of them (`_read`,
`_read_entry`); everything else is here, so the WebDataset and Zarr loaders behave the same.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ..manifest import OutputRoot
from .batch import Batch, collate
from .common import (
    Dequantizer,
    LatentOutput,
    RunInfo,
    channel_stats,
    check_compatible,
    flip_choice,
    sample_meta,
    valid_mask,
)
from .follow import follow_shards
from .order import Catalog, EpochOrder, LoaderState, epoch_order, fingerprint, merge_states, split_remaining

Flip = Literal["pair"] | None


@dataclass
class Raw:
    """One stored sample before the transforms."""

    latent: np.ndarray  # int8
    latent_flip: np.ndarray | None
    label: int
    meta: str | bytes | None  # the sample's JSON text
    key: str
    run: int  # index of its run among the loader's roots
    where: str  # for error messages


def dist_info(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """This process's (rank, world size): the arguments, else torch.distributed, else RANK/WORLD_SIZE."""
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def worker_info() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


class LatentStream(torch.utils.data.IterableDataset):
    """Base of LatentWebDataset and LatentZarrStream (see their docstrings for the options)."""

    shuffle_groups_default = True

    def __init__(
        self,
        root: str | Sequence[str],
        *,
        output: LatentOutput = "float",
        batch_size: int | None = None,
        shuffle_buffer: int = 0,
        shuffle_shards: bool = True,
        resampled: bool = False,
        with_meta: bool = False,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        flip: Flip = None,
        normalize: bool = False,
        with_mask: bool | None = None,
        bucket_batches: bool | None = None,
        drop_last: bool = False,
        allow_mixed: bool = False,
        follow: bool = False,
        poll: float = 0.5,
        follow_timeout: float | None = None,
        codec: str | None = None,
        storage_options: dict | None = None,
    ):
        super().__init__()
        roots = [root] if isinstance(root, str) else list(root)
        if not roots:
            raise ValueError("no run given")
        self.storage_options = storage_options or {}
        open_run = RunInfo.follow if follow else RunInfo.open
        kwargs = {"codec": codec, "timeout": follow_timeout} if follow else {}
        self.infos = [open_run(r, storage_options, **kwargs) for r in roots]
        check_compatible(self.infos, allow_mixed)
        self.info = self.infos[0]
        if flip not in (None, "pair"):
            raise ValueError('flip must be None or "pair" (a stored mirrored latent per sample)')
        self.dequantize = [Dequantizer(i.bits, output) for i in self.infos]
        self.output, self.flip = output, flip
        self.norm = channel_stats(self.infos, output) if normalize else None
        self.with_mask = self.info.is_audio if with_mask is None else with_mask
        self.batch_size, self.shuffle_buffer, self.drop_last = batch_size, shuffle_buffer, drop_last
        self.shuffle_shards, self.resampled, self.with_meta = shuffle_shards, resampled, with_meta
        self.seed, self.epoch = seed, 0
        self._rank, self._world = rank, world_size
        self.follow, self.poll, self.follow_timeout = follow, poll, follow_timeout
        self.bucket_batches = bucket_batches
        self._catalog: Catalog | None = None
        self._base = np.zeros(0, dtype=bool)  # consumed when this epoch was (re)started: same on all ranks
        self._own = np.zeros(0, dtype=bool)  # consumed since, by this rank
        self._emit_positions = False  # set by ResumableLoader: items travel with their positions

    # --- what a subclass provides ---------------------------------------------------------------
    def _build_catalog(self) -> Catalog:
        raise NotImplementedError

    def _read(self, samples: np.ndarray) -> list[Raw]:
        """The stored samples of these catalog indices, in this order."""
        raise NotImplementedError

    def _read_entry(self, run: int, entry: dict[str, Any]) -> Iterator[tuple[Raw, str | None]]:
        """Follow mode: every live sample of one committed shard, with its bucket."""
        raise NotImplementedError

    # --- catalog, order, state --------------------------------------------------------------------
    @property
    def catalog(self) -> Catalog:
        if self.follow:
            raise ValueError("follow mode reads shards as they commit: there is no epoch order to index")
        if self._catalog is None:
            self._catalog = self._build_catalog()
            n = len(self._catalog)
            self._base, self._own = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        return self._catalog

    @property
    def num_samples(self) -> int:
        """Samples of one epoch, all ranks together."""
        return len(self.catalog)

    def _bucketed(self) -> bool:
        if self.bucket_batches is False:
            return False
        bucketed = bool(self.catalog.bucket_names)
        if self.bucket_batches and not self.batch_size:
            raise ValueError("bucket_batches needs batch_size")
        return bool(self.batch_size) and (bucketed or bool(self.bucket_batches))

    def epoch_order(self) -> EpochOrder:
        """This epoch's global order: positions -> catalog indices, cut in units."""
        return epoch_order(
            self.catalog,
            self.seed,
            self.epoch,
            shuffle_groups=self.shuffle_shards,
            block=self.shuffle_buffer,
            batch=self.batch_size,
            by_bucket=self._bucketed(),
            drop_last=self.drop_last,
        )

    def _ident(self) -> str:
        """The sample set and the options that shape the order: a state resumes only its own."""
        bucketed = self._bucketed()
        return fingerprint(
            self.catalog.ident,
            self.shuffle_shards,
            self.shuffle_buffer,
            self.batch_size if bucketed else None,
            self.drop_last and bool(self.batch_size),
        )

    def set_epoch(self, epoch: int) -> None:
        """Start epoch `epoch` (same seed and epoch -> same order), forgetting what was consumed."""
        self.epoch = epoch
        if self._catalog is not None:
            self._base[:] = False
            self._own[:] = False

    def state_dict(self) -> dict[str, Any]:
        """(seed, epoch, consumed positions) of this rank. Several ranks: merge_states() of all ranks'."""
        cat = self.catalog
        return LoaderState(self.seed, self.epoch, self._ident(), len(cat), self._base | self._own).to_dict()

    def load_state_dict(self, state: dict[str, Any] | list[dict[str, Any]]) -> None:
        """Resume: the rest of that epoch, split over this job's ranks and workers (any number)."""
        if isinstance(state, list):
            state = merge_states(state)
        parsed = LoaderState.from_dict(state)
        cat = self.catalog
        if parsed.ident != self._ident() or parsed.samples != len(cat):
            raise ValueError(
                "this loader state was saved over another set of samples (other runs, shards or options); "
                "it cannot say which of these samples were seen"
            )
        self.seed, self.epoch = parsed.seed, parsed.epoch
        self._base, self._own = parsed.consumed.copy(), np.zeros(len(cat), dtype=bool)

    def _mark(self, positions: np.ndarray) -> None:
        if not self.follow and not self.resampled:
            self._own[np.asarray(positions, dtype=np.int64)] = True

    def _my_units(self, order: EpochOrder, worker: int, workers: int) -> list[np.ndarray]:
        rank, world = dist_info(self._rank, self._world)
        units = split_remaining(order, self._base, rank, world, worker, workers)
        units = [u[~self._own[u]] for u in units]
        return [u for u in units if len(u)]

    def advance_if_done(self) -> None:
        """A new pass over an epoch this rank has finished starts the next epoch (main process only)."""
        if self.follow or self.resampled:
            return
        order = self.epoch_order()
        if len(order.samples) and not self._my_units(order, 0, 1):
            self.set_epoch(self.epoch + 1)

    # --- iteration ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator:
        worker, workers = worker_info()
        if torch.utils.data.get_worker_info() is None:
            self.advance_if_done()
        if self.follow:
            yield from self._emit(self._iter_follow(worker, workers))
        elif self.resampled:
            yield from self._emit(self._iter_resampled(worker, workers))
        else:
            yield from self._emit(self._iter_epoch(worker, workers))

    def _emit(self, items: Iterator[tuple[Any, np.ndarray]]) -> Iterator:
        for item, positions in items:
            self._mark(positions)
            yield (item, positions) if self._emit_positions else item

    def _iter_epoch(self, worker: int, workers: int) -> Iterator[tuple[Any, np.ndarray]]:
        order = self.epoch_order()
        units = self._my_units(order, worker, workers)
        if self.batch_size:  # a unit is a batch (cut from the global order: whole batches per rank)
            for unit in units:
                yield self._collate([self._finish(r) for r in self._read(order.samples[unit])]), unit
            return
        positions = np.concatenate(units) if units else np.zeros(0, dtype=np.int64)
        for start in range(0, len(positions), 64):  # read in chunks, yield samples
            chunk = positions[start : start + 64]
            for p, raw in zip(chunk, self._read(order.samples[chunk]), strict=True):
                yield self._finish(raw), np.array([p])

    def _iter_resampled(self, worker: int, workers: int) -> Iterator[tuple[Any, np.ndarray]]:
        """Infinite: read units (tars, or Zarr shards) drawn with replacement, seeded per rank and worker."""
        cat = self.catalog
        rank, world = dist_info(self._rank, self._world)
        rng = np.random.default_rng([self.seed, self.epoch, rank, worker, 7])
        by_group = np.argsort(cat.group, kind="stable")
        _, starts = np.unique(cat.group[by_group], return_index=True)
        members = np.split(by_group, starts[1:])  # catalog indices of each group
        pending: list = []
        while True:
            for r in self._read(members[rng.integers(len(members))]):
                pending.append(self._finish(r))
                if not self.batch_size:
                    yield pending.pop(), np.zeros(0, dtype=np.int64)
                elif len(pending) == self.batch_size:
                    yield self._collate(pending), np.zeros(0, dtype=np.int64)
                    pending = []

    def _iter_follow(self, worker: int, workers: int) -> Iterator[tuple[Any, np.ndarray]]:
        """Shards as they commit; shard s goes to consumer s mod (ranks x workers)."""
        rank, world = dist_info(self._rank, self._world)
        consumers, me = world * workers, rank * workers + worker
        none = np.zeros(0, dtype=np.int64)
        pending: dict[str | None, list] = {}
        for run, info in enumerate(self.infos):
            root = OutputRoot(info.root, self.storage_options)
            for entry in follow_shards(root, lambda s: s % consumers == me, self.poll, self.follow_timeout):
                for raw, bucket in self._read_entry(run, entry):
                    item = self._finish(raw)
                    if not self.batch_size:
                        yield item, none
                        continue
                    group = pending.setdefault(bucket if self.bucket_batches is not False else None, [])
                    group.append(item)
                    if len(group) == self.batch_size:
                        yield self._collate(group), none
                        group.clear()
        if not self.drop_last:
            for group in pending.values():
                if group:
                    yield self._collate(group), none

    # --- per-sample transforms --------------------------------------------------------------------
    def _finish(self, raw: Raw) -> Batch:
        z = raw.latent
        if self.flip == "pair":
            if raw.latent_flip is None:
                raise KeyError(f"{raw.where}: flip='pair' needs a run encoded with --flip-pair")
            if flip_choice(self.seed, self.epoch, raw.key):
                z = raw.latent_flip
        out = self.dequantize[raw.run](z)
        if self.norm is not None:
            mean, std = self.norm
            # the channel axis counted from the end: grouped stems (S, C, t) broadcast over S
            shape = (-1,) + (1,) * (1 if self.infos[raw.run].is_audio else 2)
            out = (out.float() - mean.view(shape)) / std.clamp_min(1e-12).view(shape)
        meta = mask = None
        if self.with_meta or self.with_mask:
            meta = sample_meta(raw.meta or b"", raw.where)
        if self.with_mask:
            info = self.infos[raw.run]
            size = meta.get("input_size") or [None]
            mask = valid_mask(meta.get("valid_length"), out.shape[-1], info.levels, size[-1])
        return Batch(out, raw.label, mask=mask, meta=meta if self.with_meta else None, key=raw.key)

    @staticmethod
    def _collate(items: list[Batch]) -> Batch:
        return collate(items)

    # --- DataLoader with resume -----------------------------------------------------------------
    def loader(self, num_workers: int = 0, **kwargs: Any) -> ResumableLoader:
        """A DataLoader over this stream whose state_dict() knows exactly what was delivered."""
        return ResumableLoader(self, num_workers=num_workers, **kwargs)


class ResumableLoader:
    """torch DataLoader over a LatentStream (batch_size=None: the stream batches) that records the
    positions of every item it hands out, so its state_dict() counts what the training loop got,
    not what workers prefetched."""

    def __init__(self, dataset: LatentStream, num_workers: int = 0, **kwargs: Any):
        self.dataset, self.num_workers, self.kwargs = dataset, num_workers, kwargs

    def __iter__(self) -> Iterator:
        ds = self.dataset
        ds.advance_if_done()
        ds._emit_positions = True
        try:
            loader = torch.utils.data.DataLoader(
                ds, batch_size=None, num_workers=self.num_workers, **self.kwargs
            )
            for item, positions in loader:
                ds._mark(np.asarray(positions))
                yield item
        finally:
            ds._emit_positions = False

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        return self.dataset.state_dict()

    def load_state_dict(self, state: dict[str, Any] | list[dict[str, Any]]) -> None:
        self.dataset.load_state_dict(state)
