"""Zarr latent stores -> a map-style Dataset: random access, DistributedSampler, exact resume.

Rows with valid=False (inputs that failed; see errors.parquet) are skipped, and so are rows of shards
the manifest does not list (a shard whose write failed part-way may have left rows behind).
`__getitems__` reads a whole batch with one orthogonal selection, so a DataLoader touches each Zarr
shard once per batch instead of once per sample.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import zarr

from ..sinks.zarr import STORE
from .common import Dequantizer, LatentOutput, RunInfo, sample_meta


def committed_rows(manifest: dict[str, Any], n: int) -> np.ndarray:
    """Rows of committed shards (the manifest's): a shard that failed may have left rows behind."""
    mask = np.zeros(n, dtype=bool)
    for s in manifest["shards"]:
        start = s.get("slot_offset", 0)
        mask[start : start + s["samples"] + s.get("errors", 0)] = True
    return mask


class LatentZarrDataset(torch.utils.data.Dataset):
    def __init__(
        self,
        root: str,
        *,
        output: LatentOutput = "float",
        with_meta: bool = False,
        storage_options: dict | None = None,
    ):
        self.info = RunInfo.open(root, storage_options)
        self.url = f"{self.info.root}/{STORE}"
        self.storage_options = storage_options
        group = self._open()
        valid = group["valid"][:]
        self.rows = np.flatnonzero(valid & committed_rows(self.info.manifest, len(valid)))  # index -> row
        self.dequantize = Dequantizer(self.info.bits, output)
        self.with_meta = with_meta
        self._group = None  # opened lazily in each DataLoader worker

    def _open(self):
        return zarr.open_group(self.url, mode="r", storage_options=self.storage_options)

    @property
    def group(self):
        if self._group is None:
            self._group = self._open()
        return self._group

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_group"] = None  # never pickle open stores into workers
        return state

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[tuple]:
        rows = self.rows[np.asarray(indices)]
        order = np.argsort(rows)  # sorted reads, then back to the caller's order
        sorted_rows = rows[order]
        latents = self.group["latents"].get_orthogonal_selection((sorted_rows,))
        labels = self.group["labels"].get_orthogonal_selection((sorted_rows,))
        metas = self.group["meta"].get_orthogonal_selection((sorted_rows,)) if self.with_meta else None
        out: list[tuple] = [()] * len(rows)
        for k, i in enumerate(order):
            item: tuple = (self.dequantize(latents[k]), int(labels[k]))
            if metas is not None:
                item += (sample_meta(str(metas[k]), f"{self.url} row {sorted_rows[k]}"),)
            out[i] = item
        return out

    def keys(self) -> list[str]:
        return [str(k) for k in self.group["keys"].get_orthogonal_selection((self.rows,))]
