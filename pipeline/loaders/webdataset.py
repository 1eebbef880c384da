"""WebDataset latent shards -> PyTorch, with the usual streaming recipe.

    shards (seeded shuffle per epoch, or resampled) -> split by node (rank) -> split by worker
      -> tar samples -> shuffle buffer -> decode latent/label/meta -> batch to (B, C, h, w)

Each rank and each DataLoader worker reads disjoint shards. Mid-epoch resume is not offered for
this loader: streams restart at an epoch boundary (`set_epoch`); use the Zarr loader (map-style)
when exact mid-epoch resume matters.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Iterator
from typing import Any

import fsspec
import torch
import webdataset as wds
from webdataset.tariterators import group_by_keys, tar_file_expander

from .common import Dequantizer, LatentOutput, RunInfo, latent_from_sample, sample_meta


class TamperedShardError(ValueError):
    """A shard whose bytes do not match the sha256 the manifest recorded."""


class LatentWebDataset(torch.utils.data.IterableDataset):
    """Iterate (latent, label[, meta]) or batches of them from a pipeline's WebDataset output."""

    def __init__(
        self,
        root: str,
        *,
        output: LatentOutput = "float",
        batch_size: int | None = None,
        shuffle_buffer: int = 0,
        shuffle_shards: bool = True,
        resampled: bool = False,
        with_meta: bool = False,
        verify: bool = True,
        seed: int = 0,
        storage_options: dict | None = None,
    ):
        super().__init__()
        self.info = RunInfo.open(root, storage_options)
        self.urls = self.info.shard_urls()
        self.sha256 = {f"{self.info.root}/{s['name']}": s["sha256"] for s in self.info.manifest["shards"]}
        self.verify, self.storage_options = verify, storage_options or {}
        if not self.urls:
            raise FileNotFoundError(f"{root}: the manifest lists no WebDataset shards")
        self.dequantize = Dequantizer(self.info.bits, output)
        self.batch_size, self.shuffle_buffer = batch_size, shuffle_buffer
        self.shuffle_shards, self.resampled = shuffle_shards, resampled
        self.with_meta, self.seed, self.epoch = with_meta, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle shard order for a new epoch (same seed and epoch -> same order)."""
        self.epoch = epoch

    def _open_shards(self, urls: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Read each shard whole (shards are bounded by --shard-size) and check its sha256."""
        for entry in urls:
            url = entry["url"]
            with fsspec.open(url, "rb", **self.storage_options) as f:
                data = f.read()
            if self.verify and hashlib.sha256(data).hexdigest() != self.sha256.get(url):
                raise TamperedShardError(
                    f"{url}: sha256 {hashlib.sha256(data).hexdigest()[:12]} does not match the manifest's "
                    f"{str(self.sha256.get(url))[:12]}; the shard was modified or corrupted"
                )
            yield {"url": url, "stream": io.BytesIO(data)}

    def _decode(self, sample: dict[str, Any]) -> tuple:
        z = self.dequantize(latent_from_sample(sample, self.info.codec_hash))
        label = int(sample["cls"]) if "cls" in sample else -1
        if self.with_meta:
            return z, label, sample_meta(sample["json"], f"{sample.get('__url__')} {sample.get('__key__')}")
        return z, label

    def pipeline(self) -> wds.DataPipeline:
        if self.resampled:
            stages: list[Any] = [wds.ResampledShards(self.urls, seed=self.seed + self.epoch)]
        else:
            stages = [wds.SimpleShardList(self.urls)]
            if self.shuffle_shards:
                stages.append(
                    wds.detshuffle(
                        bufsize=len(self.urls), initial=len(self.urls), seed=self.seed, epoch=self.epoch
                    )
                )
            stages += [wds.split_by_node, wds.split_by_worker]
        stages += [self._open_shards, tar_file_expander, group_by_keys]
        if self.shuffle_buffer:
            stages.append(wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=None))
        stages.append(wds.map(self._decode))
        if self.batch_size:
            stages.append(wds.batched(self.batch_size, collation_fn=_collate, partial=True))
        return wds.DataPipeline(*stages)

    def __iter__(self) -> Iterator:
        return iter(self.pipeline())


def _collate(samples: list[tuple]) -> tuple:
    zs = torch.stack([s[0] for s in samples])
    labels = torch.tensor([s[1] for s in samples], dtype=torch.long)
    if len(samples[0]) == 3:
        return zs, labels, [s[2] for s in samples]
    return zs, labels
