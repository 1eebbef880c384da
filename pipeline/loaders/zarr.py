"""Zarr latent stores -> PyTorch: a map-style Dataset (random access, DistributedSampler) and a
stream with the WebDataset loader's global order, resume at any world size, buckets and follow mode.

Rows with valid=False (inputs that failed; see errors.parquet) are skipped, and so are rows of shards
the manifest does not list (a shard whose write failed part-way may have left rows behind) and rows
the manifest lists as superseded. Bucketed stores (--buckets) keep each row's latent in
`buckets/<WxH>/latents` and its bucket name in the per-row `bucket` array. Reads of several rows
use one orthogonal selection per (run, bucket), in row order, so a DataLoader touches each Zarr shard
once per batch instead of once per sample.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import zarr

from ..zarr_layout import BUCKET, KEYS, LABELS, LATENTS_FLIP, META, STORE, VALID, latent_path
from .batch import Batch
from .common import Dequantizer, LatentOutput, RunInfo, check_compatible, sample_meta, valid_mask
from .order import Catalog, fingerprint
from .stream import LatentStream, Raw


def committed_rows(manifest: dict[str, Any], n: int) -> np.ndarray:
    """Rows of committed shards (the manifest's): a shard that failed may have left rows behind."""
    mask = np.zeros(n, dtype=bool)
    for s in manifest["shards"]:
        start = s.get("slot_offset", 0)
        mask[start : start + s["samples"] + s.get("errors", 0)] = True
    return mask


def row_shards(manifest: dict[str, Any], n: int) -> np.ndarray:
    """Row -> shard number (-1: none)."""
    shard = np.full(n, -1, dtype=np.int64)
    for s in manifest["shards"]:
        start = s.get("slot_offset", 0)
        shard[start : start + s["samples"] + s.get("errors", 0)] = s["shard"]
    return shard


class _Store:
    """One run's Zarr group, opened lazily (never pickled into workers), read by rows."""

    def __init__(
        self, info: RunInfo, storage_options: dict | None, cache: bool = True, block_cache_mb: int = 0
    ):
        self.url = f"{info.root}/{STORE}"
        self.storage_options = storage_options or None
        self.cache = cache  # False while following a run: its rows are still being written
        # > 0: read whole Zarr shards (one read each) and keep the last ones up to this size
        self.block_cache_bytes = block_cache_mb << 20 if cache else 0
        self._group = None

    @property
    def group(self):
        if self._group is None:
            self._group = zarr.open_group(self.url, mode="r", storage_options=self.storage_options)
        return self._group

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__) | {"_group": None, "_columns": {}, "_blocks": OrderedDict()}

    def select(self, name: str, rows: np.ndarray) -> np.ndarray:
        """array[rows] for sorted rows: one orthogonal selection, or whole cached Zarr shards."""
        arr = self.group[name]
        if not self.block_cache_bytes:
            return arr.get_orthogonal_selection((rows,))
        size = (arr.shards or arr.chunks)[0]
        blocks = rows // size
        parts, where = [], []
        for b in np.unique(blocks):
            sel = np.flatnonzero(blocks == b)
            parts.append(self._block(name, arr, int(b), size)[rows[sel] - b * size])
            where.append(sel)
        out = np.concatenate(parts)
        back = np.empty(len(rows), dtype=np.int64)
        back[np.concatenate(where)] = np.arange(len(rows))
        return out[back]

    def _block(self, name: str, arr, b: int, size: int) -> np.ndarray:
        cache = self.__dict__.setdefault("_blocks", OrderedDict())
        if (name, b) in cache:
            cache.move_to_end((name, b))
            return cache[name, b]
        data = np.asarray(arr[b * size : min((b + 1) * size, arr.shape[0])])
        cache[name, b] = data
        while len(cache) > 2 and sum(v.nbytes for v in cache.values()) > self.block_cache_bytes:
            cache.popitem(last=False)
        return data

    def column(self, name: str) -> np.ndarray:
        """A small per-row array (labels, keys, bucket), read whole once per process."""
        cache = self.__dict__.setdefault("_columns", {})
        if name not in cache:
            if name == BUCKET and name not in self.group:
                column = np.full(self.group[VALID].shape[0], "", dtype=object)
            else:
                column = np.asarray(self.group[name][:], dtype=object if name != LABELS else None)
            if not self.cache:
                return column
            cache[name] = column
        return cache[name]

    def rows_of(self, name: str, rows: np.ndarray) -> np.ndarray:
        if self.cache or (name == BUCKET and name not in self.group):
            return self.column(name)[rows]
        values = self.group[name].get_orthogonal_selection((rows,))
        return np.asarray(values, dtype=object if name != LABELS else None)

    def buckets(self, rows: np.ndarray) -> np.ndarray:
        return self.rows_of(BUCKET, rows)

    def read(self, rows: np.ndarray, *, flip: bool, meta: bool) -> list[tuple]:
        """(latent, latent_flip, label, meta, key, bucket) of sorted rows."""
        g = self.group
        labels = self.rows_of(LABELS, rows)
        keys = self.rows_of(KEYS, rows)
        metas = self.select(META, rows) if meta else [None] * len(rows)
        buckets = self.buckets(rows)
        latents: list[Any] = [None] * len(rows)
        flips: list[Any] = [None] * len(rows)
        for b in sorted(set(buckets)):
            idx = np.flatnonzero(buckets == b)
            block = self.select(latent_path(b), rows[idx])
            fblock = None
            if flip and latent_path(b, LATENTS_FLIP) in g:
                fblock = self.select(latent_path(b, LATENTS_FLIP), rows[idx])
            for k, i in enumerate(idx):
                latents[i] = block[k]
                flips[i] = None if fblock is None else fblock[k]
        return [
            (latents[i], flips[i], int(labels[i]), metas[i], str(keys[i]), str(buckets[i]))
            for i in range(len(rows))
        ]


def live_rows(info: RunInfo, store: _Store) -> np.ndarray:
    """Rows that hold a committed, valid, not superseded sample."""
    valid = store.group[VALID][:]
    rows = np.flatnonzero(valid & committed_rows(info.manifest, len(valid)))
    superseded = info.superseded
    if superseded and len(rows):
        shards = row_shards(info.manifest, len(valid))[rows]
        keys = store.group[KEYS].get_orthogonal_selection((rows,))
        keep = [(int(s), str(k)) not in superseded for s, k in zip(shards, keys, strict=True)]
        rows = rows[np.asarray(keep, dtype=bool)]
    return rows


class LatentZarrDataset(torch.utils.data.Dataset):
    """Map-style: dataset[i] -> a Batch of one sample (`z, y = dataset[i]`; .mask for audio runs, as
    the streams give it (with_mask), .meta with with_meta=True, .key); DataLoader(dataset, batch_size=B)
    collates them into Batches. For DistributedSampler / any sampler.

    For the global order, resume at any world size, bucket batching and follow mode use
    LatentZarrStream."""

    def __init__(
        self,
        root: str | Sequence[str],
        *,
        output: LatentOutput = "float",
        with_meta: bool = False,
        with_mask: bool | None = None,
        allow_mixed: bool = False,
        storage_options: dict | None = None,
    ):
        roots = [root] if isinstance(root, str) else list(root)
        self.infos = [RunInfo.open(r, storage_options) for r in roots]
        check_compatible(self.infos, allow_mixed)
        self.info = self.infos[0]
        self.stores = [_Store(i, storage_options) for i in self.infos]
        self.url = self.stores[0].url
        self.storage_options = storage_options
        per_run = [live_rows(i, s) for i, s in zip(self.infos, self.stores, strict=True)]
        self.runs = np.concatenate([np.full(len(r), k) for k, r in enumerate(per_run)]).astype(np.int64)
        self.rows = np.concatenate(per_run).astype(np.int64)  # index -> row (of run self.runs[index])
        self.dequantize = [Dequantizer(i.bits, output) for i in self.infos]
        self.with_meta = with_meta
        self.with_mask = self.info.is_audio if with_mask is None else with_mask

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Batch:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[Batch]:
        """Samples (a Batch each; DataLoader collates them into one Batch) in the caller's order."""
        indices = np.asarray(indices, dtype=np.int64)
        out: list[Batch | None] = [None] * len(indices)
        for run in np.unique(self.runs[indices]):
            where = np.flatnonzero(self.runs[indices] == run)
            rows = self.rows[indices[where]]
            order = np.argsort(rows)  # sorted reads, then back to the caller's order
            got = self.stores[run].read(rows[order], flip=False, meta=self.with_meta or self.with_mask)
            for k, i in enumerate(order):
                z, _, label, meta, key, _ = got[k]
                latents, mask = self.dequantize[run](z), None
                if self.with_meta or self.with_mask:
                    meta = sample_meta(str(meta), f"{self.stores[run].url} row {rows[order][k]}")
                if self.with_mask:
                    size = meta.get("input_size") or [None]
                    steps = latents.shape[-1]
                    mask = valid_mask(meta.get("valid_length"), steps, self.infos[run].levels, size[-1])
                out[where[i]] = Batch(
                    latents, label, mask=mask, meta=meta if self.with_meta else None, key=key
                )
        return out  # type: ignore[return-value]

    def keys(self) -> list[str]:
        out = []
        for run, store in enumerate(self.stores):
            rows = self.rows[self.runs == run]
            out += [str(k) for k in store.group[KEYS].get_orthogonal_selection((rows,))]
        return out


class LatentZarrStream(LatentStream):
    """Zarr runs as an IterableDataset with LatentWebDataset's options and guarantees: global order
    from (seed, epoch) over all live rows (pipeline shards shuffled, rows shuffled within blocks of
    shuffle_buffer; each Zarr shard read whole, the last ones kept up to cache_mb), split over
    ranks and workers with equal work, state_dict/load_state_dict at any world size, bucket batches,
    flip pairs, normalize, audio masks, several runs, follow=True for a run in progress."""

    def __init__(self, root: str | list[str], *, cache_mb: int = 128, **kwargs: Any):
        super().__init__(root, **kwargs)
        self.stores = [_Store(i, self.storage_options, not self.follow, cache_mb) for i in self.infos]

    def _build_catalog(self) -> Catalog:
        runs, rows, buckets = [], [], []
        for run, (info, store) in enumerate(zip(self.infos, self.stores, strict=True)):
            r = live_rows(info, store)
            runs.append(np.full(len(r), run, dtype=np.int64))
            rows.append(r.astype(np.int64))
            buckets.append(store.buckets(r) if len(r) else np.zeros(0, dtype=object))
        self._run = np.concatenate(runs)
        self._row = np.concatenate(rows)
        names_per_row = np.concatenate(buckets) if buckets else np.zeros(0, dtype=object)
        names = tuple(sorted({str(b) for b in names_per_row if b}))
        code = {b: i for i, b in enumerate(names)}
        bucket = np.array([code.get(str(b), -1) for b in names_per_row], dtype=np.int64)
        ident = fingerprint([i.manifest["totals"] for i in self.infos], self._run, self._row)
        # read unit: a pipeline shard (= one Zarr shard of rows), shuffled like the WebDataset tars
        sizes = np.array([int(i.manifest["run"]["shard_size"]) for i in self.infos], dtype=np.int64)
        shard_of_row = self._row // sizes[self._run] if len(self._row) else self._row
        _, group = np.unique(np.stack([self._run, shard_of_row]), axis=1, return_inverse=True)
        return Catalog(group=group.ravel(), bucket=bucket, bucket_names=names, ident=ident)

    def _raws(self, run: int, rows: np.ndarray) -> list[tuple[Raw, str | None]]:
        store = self.stores[run]
        need_meta = self.with_meta or self.with_mask
        out = []
        for z, zf, label, meta, key, bucket in store.read(rows, flip=self.flip == "pair", meta=need_meta):
            raw = Raw(z, zf, label, meta, key, run, f"{store.url} {key}")
            out.append((raw, bucket or None))
        return out

    def _read(self, samples: np.ndarray) -> list[Raw]:
        self.catalog  # noqa: B018 (builds _run/_row in this process if needed)
        out: list[Raw | None] = [None] * len(samples)
        for run in np.unique(self._run[samples]):
            where = np.flatnonzero(self._run[samples] == run)
            rows = self._row[samples[where]]
            order = np.argsort(rows)
            for k, (raw, _) in enumerate(self._raws(int(run), rows[order])):
                out[where[order[k]]] = raw
        return out  # type: ignore[return-value]

    def _read_entry(self, run: int, entry: dict[str, Any]) -> Iterator[tuple[Raw, str | None]]:
        store, superseded = self.stores[run], self.infos[run].superseded
        start = entry.get("slot_offset", 0)
        rows = np.arange(start, start + entry["samples"] + entry.get("errors", 0))
        rows = rows[store.group[VALID].get_orthogonal_selection((rows,))]
        for raw, bucket in self._raws(run, rows):
            if (entry["shard"], raw.key) not in superseded:
                yield raw, bucket
