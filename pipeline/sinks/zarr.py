"""Zarr v3 store: `latents.zarr/` with arrays latents (N, C, h, w) int8, labels, keys, meta, valid,
cache_keys (the samples' cache_key, "" for empty rows).

Latents are chunked per sample and packed with the sharding codec so that one Zarr shard holds
exactly one pipeline shard (--shard-size samples): each worker writes whole Zarr shards only, never
a partial one that another worker also touches. Row i is input i of the plan, so failed inputs leave
a row with valid=False (their reason is in errors.parquet). Fixed sample shape (--crop center or
audio windows), or one shape per aspect bucket (--buckets): then the latents are per-bucket arrays
`buckets/<W>x<H>/latents` (N, C, h, w), written sparse (a row holds data only in its own bucket's
array: chunks left at the fill value are not stored), and a per-row string array `bucket` says
which. --flip-pair adds `latents_flip` (per bucket: `buckets/<b>/latents_flip`) of the same shape.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import zarr

from ..registry import register_sink
from .base import EncodedSample, ShardStats, ShardWriter, Sink

STORE = "latents.zarr"
ROW_ARRAYS = ("labels", "keys", "meta", "valid")  # one value per row, every layout
BUCKET_GROUP = "buckets"  # buckets/<WxH>/latents[_flip]
CACHE_KEYS = "cache_keys"  # per row: the sample's cache_key ("" where none; absent in older stores)


def _latent_arrays(flip: bool) -> tuple[str, ...]:
    return ("latents", "latents_flip") if flip else ("latents",)


class ZarrShardWriter(ShardWriter):
    def __init__(self, sink: ZarrSink, shard: int, slot_offset: int):
        self.sink, self.shard, self.offset = sink, shard, slot_offset
        self.samples: list[EncodedSample] = []

    def write(self, sample: EncodedSample) -> None:
        self.samples.append(sample)

    def commit(self) -> ShardStats:
        group = zarr.open_group(self.sink.store_url, mode="r+", storage_options=self.sink.storage_options)
        bucketed = "bucket" in group
        n = self.sink.spec.shard_size
        stop = min(self.offset + n, group["valid"].shape[0])
        rows = stop - self.offset
        labels = np.full(rows, -1, dtype=np.int64)
        keys = np.full(rows, "", dtype=object)
        metas = np.full(rows, "", dtype=object)
        buckets = np.full(rows, "", dtype=object)
        cache_keys = np.full(rows, "", dtype=object)
        valid = np.zeros(rows, dtype=bool)
        flip = self.sink.spec.flip_pair
        # (bucket or None) -> {array name: block}: only the buckets present in this shard are written
        blocks: dict[str | None, dict[str, np.ndarray]] = {}
        if not bucketed:
            blocks[None] = {a: np.zeros((rows, *group[a].shape[1:]), np.int8) for a in _latent_arrays(flip)}
        for s in self.samples:
            where = f"{BUCKET_GROUP}/{s.bucket}/" if bucketed else ""
            if bucketed and s.bucket is None:
                raise ValueError(f"{s.key}: a bucketed store needs the sample's bucket")
            if bucketed and s.bucket not in blocks:
                if f"{where}latents" not in group:
                    raise ValueError(f"{s.key}: bucket {s.bucket} is not one of the store's buckets")
                shape = group[f"{where}latents"].shape[1:]
                blocks[s.bucket] = {a: np.zeros((rows, *shape), np.int8) for a in _latent_arrays(flip)}
            block = blocks[s.bucket if bucketed else None]
            for name, z in (("latents", s.latent), ("latents_flip", s.latent_flip))[: len(block)]:
                if z is None:
                    raise ValueError(f"{s.key}: the store has {name} but the sample has no such latent")
                if tuple(z.shape) != block[name].shape[1:]:
                    raise ValueError(f"{s.key}: latent shape {z.shape} != store's {block[name].shape[1:]}")
                block[name][s.slot] = z
            labels[s.slot] = -1 if s.label is None else s.label
            keys[s.slot] = s.key
            metas[s.slot] = json.dumps(s.meta, sort_keys=True)
            buckets[s.slot] = s.bucket or ""
            cache_keys[s.slot] = s.meta.get("cache_key", "")
            valid[s.slot] = True
        region = slice(self.offset, stop)
        digest = hashlib.sha256()
        parts = []
        for bucket in sorted(blocks, key=lambda b: b or ""):
            where = f"{BUCKET_GROUP}/{bucket}/" if bucket is not None else ""
            for name, block in blocks[bucket].items():
                group[f"{where}{name}"][region] = block
                digest.update(block.tobytes())
            if bucket is not None:
                mine = [s for s in sorted(self.samples, key=lambda s: s.slot) if s.bucket == bucket]
                part_digest = hashlib.sha256(b"".join(b.tobytes() for b in blocks[bucket].values()))
                parts.append(
                    {
                        "name": f"{STORE}/{where}latents#{self.offset}:{stop}",
                        "bucket": bucket,
                        "samples": len(mine),
                        "bytes": sum(int(blocks[bucket][a][0].nbytes) * len(mine) for a in blocks[bucket]),
                        "sha256": part_digest.hexdigest(),
                        "keys_first": mine[0].key,
                        "keys_last": mine[-1].key,
                    }
                )
        group["labels"][region] = labels
        group["keys"][region] = keys.astype(str)
        group["meta"][region] = metas.astype(str)
        group["valid"][region] = valid
        if bucketed:
            group["bucket"][region] = buckets.astype(str)
        if CACHE_KEYS in group:
            group[CACHE_KEYS][region] = cache_keys.astype(str)
        digest.update("\n".join(keys.astype(str)).encode())
        written = [s.key for s in sorted(self.samples, key=lambda s: s.slot)]
        return ShardStats(
            shard=self.shard,
            name=f"{STORE}#{self.offset}:{stop}",
            samples=len(written),
            bytes=sum(int(b.nbytes) for blk in blocks.values() for b in blk.values())
            if not bucketed
            else sum(p["bytes"] for p in parts),
            sha256=digest.hexdigest(),
            first_key=written[0] if written else None,
            last_key=written[-1] if written else None,
            keys=written,
            parts=parts if bucketed else None,
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

    def prepare(
        self,
        total_slots: int,
        sample_shape: tuple[int, ...] | dict[str, tuple[int, ...]] | None,
        description: dict,
    ) -> None:
        if sample_shape is None:
            raise ValueError(
                "the zarr sink needs one sample shape: use --crop center with --size (or fixed audio "
                "windows, or --buckets); variable-size images need --format webdataset"
            )
        # array path -> latent shape of its rows
        if isinstance(sample_shape, dict):
            latents = {
                f"{BUCKET_GROUP}/{b}/{a}": tuple(shape)
                for b, shape in sorted(sample_shape.items())
                for a in _latent_arrays(self.spec.flip_pair)
            }
        else:
            latents = {a: tuple(sample_shape) for a in _latent_arrays(self.spec.flip_pair)}
        rows = [*ROW_ARRAYS, "bucket"] if isinstance(sample_shape, dict) else list(ROW_ARRAYS)
        try:
            group = zarr.open_group(self.store_url, mode="r+", storage_options=self.storage_options)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            group = None
        if group is not None and "valid" in group:
            for path, shape in latents.items():
                if path not in group or tuple(group[path].shape[1:]) != shape:
                    have = tuple(group[path].shape[1:]) if path in group else "nothing"
                    raise ValueError(f"existing store holds {have} at {path}, not latents {shape}")
            if total_slots > group["valid"].shape[0]:
                for name in [*latents, *rows, *([CACHE_KEYS] if CACHE_KEYS in group else [])]:
                    arr = group[name]
                    arr.resize((total_slots, *arr.shape[1:]))
            group.attrs.update(description)
            return
        group = zarr.open_group(self.store_url, mode="w", storage_options=self.storage_options)
        group.attrs.update(description)
        n = self.spec.shard_size
        for path, shape in latents.items():
            dims = ("sample", "channel", "y", "x") if len(shape) == 3 else ("sample", "channel", "t")
            group.create_array(
                path,
                shape=(total_slots, *shape),
                dtype="int8",
                chunks=(1, *shape),  # one sample per chunk: random access for map-style loaders
                shards=(n, *shape),  # one Zarr shard per pipeline shard: whole-shard writes only
                fill_value=0,
                dimension_names=dims,
            )
        group.create_array("labels", shape=(total_slots,), dtype="int64", chunks=(n,), fill_value=-1)
        group.create_array("keys", shape=(total_slots,), dtype=str, chunks=(n,), fill_value="")
        group.create_array("meta", shape=(total_slots,), dtype=str, chunks=(n,), fill_value="")
        group.create_array("valid", shape=(total_slots,), dtype=bool, chunks=(n,), fill_value=False)
        group.create_array(CACHE_KEYS, shape=(total_slots,), dtype=str, chunks=(n,), fill_value="")
        if "bucket" in rows:
            group.create_array("bucket", shape=(total_slots,), dtype=str, chunks=(n,), fill_value="")

    def open_shard(self, shard: int, slot_offset: int) -> ShardWriter:
        return ZarrShardWriter(self, shard, slot_offset)

    def read_latent(self, stats: dict, slot_offset: int, key: str) -> np.ndarray:
        group = zarr.open_group(self.store_url, mode="r", storage_options=self.storage_options)
        stop = min(slot_offset + self.spec.shard_size, group["keys"].shape[0])
        rows = [i for i, k in enumerate(group["keys"][slot_offset:stop]) if k == key]
        if not rows:
            raise KeyError(f"no row of {key!r} in shard {stats['shard']} ({stats['name']})")
        row = slot_offset + rows[0]
        if "bucket" in group:
            return group[f"{BUCKET_GROUP}/{group['bucket'][row]}/latents"][row]
        return group["latents"][row]
