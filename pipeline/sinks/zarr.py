"""Zarr v3 store: `latents.zarr/` with arrays latents (N, C, h, w) int8, labels, keys, meta, valid.

Latents are chunked per sample and packed with the sharding codec so that one Zarr shard holds
exactly one pipeline shard (--shard-size samples): each worker writes whole Zarr shards only, never
a partial one that another worker also touches. Row i is input i of the plan, so failed inputs leave
a row with valid=False (their reason is in errors.parquet). Fixed sample shape only (--crop center
or audio windows); variable-size images need the WebDataset sink.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import zarr

from ..registry import register_sink
from .base import EncodedSample, ShardStats, ShardWriter, Sink

STORE = "latents.zarr"


class ZarrShardWriter(ShardWriter):
    def __init__(self, sink: ZarrSink, shard: int, slot_offset: int):
        self.sink, self.shard, self.offset = sink, shard, slot_offset
        self.samples: list[EncodedSample] = []

    def write(self, sample: EncodedSample) -> None:
        self.samples.append(sample)

    def commit(self) -> ShardStats:
        group = zarr.open_group(self.sink.store_url, mode="r+", storage_options=self.sink.storage_options)
        latents = group["latents"]
        n = self.sink.spec.shard_size
        stop = min(self.offset + n, latents.shape[0])
        rows = stop - self.offset
        block = np.zeros((rows, *latents.shape[1:]), dtype=np.int8)
        labels = np.full(rows, -1, dtype=np.int64)
        keys = np.full(rows, "", dtype=object)
        metas = np.full(rows, "", dtype=object)
        valid = np.zeros(rows, dtype=bool)
        for s in self.samples:
            if tuple(s.latent.shape) != tuple(latents.shape[1:]):
                raise ValueError(f"{s.key}: latent shape {s.latent.shape} != store's {latents.shape[1:]}")
            block[s.slot] = s.latent
            labels[s.slot] = -1 if s.label is None else s.label
            keys[s.slot] = s.key
            metas[s.slot] = json.dumps(s.meta, sort_keys=True)
            valid[s.slot] = True
        region = slice(self.offset, stop)
        latents[region] = block
        group["labels"][region] = labels
        group["keys"][region] = keys.astype(str)
        group["meta"][region] = metas.astype(str)
        group["valid"][region] = valid
        digest = hashlib.sha256(block.tobytes() + "\n".join(keys.astype(str)).encode()).hexdigest()
        written = [s.key for s in sorted(self.samples, key=lambda s: s.slot)]
        return ShardStats(
            shard=self.shard,
            name=f"{STORE}#{self.offset}:{stop}",
            samples=len(written),
            bytes=int(block.nbytes),
            sha256=digest,
            first_key=written[0] if written else None,
            last_key=written[-1] if written else None,
            keys=written,
        )


@register_sink("zarr")
class ZarrSink(Sink):
    @property
    def store_url(self) -> str:
        return f"{self.spec.output.rstrip('/')}/{STORE}"

    @property
    def storage_options(self) -> dict | None:
        return self.spec.storage_options or None

    def shard_name(self, shard: int) -> str:
        return f"{STORE}#shard-{shard:06d}"

    def prepare(self, total_slots: int, sample_shape: tuple[int, ...] | None, description: dict) -> None:
        if sample_shape is None:
            raise ValueError(
                "the zarr sink needs one sample shape: use --crop center with --size (or fixed audio "
                "windows); variable-size images need --format webdataset"
            )
        n = self.spec.shard_size
        try:
            group = zarr.open_group(self.store_url, mode="r+", storage_options=self.storage_options)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            group = None
        if group is not None and "latents" in group:
            if tuple(group["latents"].shape[1:]) != tuple(sample_shape):
                raise ValueError(
                    f"existing store holds latents {group['latents'].shape[1:]}, not {sample_shape}"
                )
            if total_slots > group["latents"].shape[0]:
                for name in ("latents", "labels", "keys", "meta", "valid"):
                    arr = group[name]
                    arr.resize((total_slots, *arr.shape[1:]))
            group.attrs.update(description)
            return
        group = zarr.open_group(self.store_url, mode="w", storage_options=self.storage_options)
        group.attrs.update(description)
        dims = ("sample", "channel", "y", "x") if len(sample_shape) == 3 else ("sample", "channel", "t")
        group.create_array(
            "latents",
            shape=(total_slots, *sample_shape),
            dtype="int8",
            chunks=(1, *sample_shape),  # one sample per chunk: random access for map-style loaders
            shards=(n, *sample_shape),  # one Zarr shard per pipeline shard: whole-shard writes only
            fill_value=0,
            dimension_names=dims,
        )
        group.create_array("labels", shape=(total_slots,), dtype="int64", chunks=(n,), fill_value=-1)
        group.create_array("keys", shape=(total_slots,), dtype=str, chunks=(n,), fill_value="")
        group.create_array("meta", shape=(total_slots,), dtype=str, chunks=(n,), fill_value="")
        group.create_array("valid", shape=(total_slots,), dtype=bool, chunks=(n,), fill_value=False)

    def open_shard(self, shard: int, slot_offset: int) -> ShardWriter:
        return ZarrShardWriter(self, shard, slot_offset)
