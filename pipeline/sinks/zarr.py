"""Zarr v3 store: `latents.zarr/` with arrays latents (N, C, h, w) int8, labels, keys, meta, valid,
cache_keys (the samples' cache_key, "" for empty rows). The names: pipeline/zarr_layout.py.

Latents are chunked per sample and packed with the sharding codec so that one Zarr shard holds
exactly one pipeline shard (--shard-size samples): each worker writes whole Zarr shards only, never
a partial one that another worker also touches. Row i is input i of the plan, so failed inputs leave
a row with valid=False (their reason is in errors.parquet). Fixed sample shape (--crop center or
audio windows), or one shape per aspect bucket (--buckets): then the latents are per-bucket arrays
`buckets/<W>x<H>/latents` (N, C, h, w), written sparse (a row holds data only in its own bucket's
array: chunks left at the fill value are not stored), and a per-row string array `bucket` says
which. --flip-pair adds `latents_flip` (per bucket: `buckets/<b>/latents_flip`) of the same shape.
Grouped stems (MUSDB runs, preprocessing `stems`): latents (N, S, C, t), a stem axis in the order of
the group attribute `stems` (mixture first), so row i holds the mixture and every stem of window i.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import zarr

from ..formats import OutputFormat
from ..registry import register_sink
from ..zarr_layout import (
    BUCKET,
    CACHE_KEYS,
    KEYS,
    LABELS,
    LATENTS,
    LATENTS_FLIP,
    META,
    ROW_ARRAYS,
    STORE,
    VALID,
    latent_names,
    latent_path,
)
from .base import EncodedSample, ShardStats, ShardWriter, Sink

__all__ = ["STORE", "ZarrShardWriter", "ZarrSink", "ZarrSizeModel"]

META_BYTES = 700  # per-sample JSON metadata (key, source URI, sha256s, crop box, sizes): typical size


class ZarrSizeModel:
    """Bytes of a Zarr store per row: the int8 latent chunk (zstd-compressed: raw is the upper
    bound), label (8), valid (1), key (~40) and metadata strings; no per-shard overhead."""

    def bytes_per_sample(
        self, latent_bytes: float, labelled: bool, flip_pair: bool = False, meta_bytes: float | None = None
    ) -> float:
        meta = META_BYTES if meta_bytes is None else meta_bytes
        return (2 if flip_pair else 1) * latent_bytes + 8 + 1 + 40 + meta

    def shard_overhead(self) -> int:
        return 0


class ZarrShardWriter(ShardWriter):
    def __init__(self, sink: ZarrSink, shard: int, slot_offset: int):
        self.sink, self.shard, self.offset = sink, shard, slot_offset
        self.samples: list[EncodedSample] = []

    def write(self, sample: EncodedSample) -> None:
        self.samples.append(sample)

    def commit(self) -> ShardStats:
        group = zarr.open_group(self.sink.store_url, mode="r+", storage_options=self.sink.storage_options)
        bucketed = BUCKET in group
        n = self.sink.spec.shard_size
        stop = min(self.offset + n, group[VALID].shape[0])
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
            blocks[None] = {a: np.zeros((rows, *group[a].shape[1:]), np.int8) for a in latent_names(flip)}
        for s in self.samples:
            if bucketed and s.bucket is None:
                raise ValueError(f"{s.key}: a bucketed store needs the sample's bucket")
            if bucketed and s.bucket not in blocks:
                if latent_path(s.bucket) not in group:
                    raise ValueError(f"{s.key}: bucket {s.bucket} is not one of the store's buckets")
                shape = group[latent_path(s.bucket)].shape[1:]
                blocks[s.bucket] = {a: np.zeros((rows, *shape), np.int8) for a in latent_names(flip)}
            block = blocks[s.bucket if bucketed else None]
            for name, z in ((LATENTS, s.latent), (LATENTS_FLIP, s.latent_flip))[: len(block)]:
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
            for name, block in blocks[bucket].items():
                group[latent_path(bucket, name)][region] = block
                digest.update(block.tobytes())
            if bucket is not None:
                mine = [s for s in sorted(self.samples, key=lambda s: s.slot) if s.bucket == bucket]
                part_digest = hashlib.sha256(b"".join(b.tobytes() for b in blocks[bucket].values()))
                parts.append(
                    {
                        "name": f"{STORE}/{latent_path(bucket)}#{self.offset}:{stop}",
                        "bucket": bucket,
                        "samples": len(mine),
                        "bytes": sum(int(blocks[bucket][a][0].nbytes) * len(mine) for a in blocks[bucket]),
                        "sha256": part_digest.hexdigest(),
                        "keys_first": mine[0].key,
                        "keys_last": mine[-1].key,
                    }
                )
        group[LABELS][region] = labels
        group[KEYS][region] = keys.astype(str)
        group[META][region] = metas.astype(str)
        group[VALID][region] = valid
        if bucketed:
            group[BUCKET][region] = buckets.astype(str)
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
    output_format = OutputFormat(
        stream="pipeline.loaders.zarr:LatentZarrStream",
        dataset="pipeline.loaders.zarr:LatentZarrDataset",
        size=ZarrSizeModel(),
        coded_latents=False,
        fixed_shape=True,
        live_description=STORE,
    )

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
                latent_path(b, a): tuple(shape)
                for b, shape in sorted(sample_shape.items())
                for a in latent_names(self.spec.flip_pair)
            }
        else:
            latents = {a: tuple(sample_shape) for a in latent_names(self.spec.flip_pair)}
        rows = [*ROW_ARRAYS, BUCKET] if isinstance(sample_shape, dict) else list(ROW_ARRAYS)
        try:
            group = zarr.open_group(self.store_url, mode="r+", storage_options=self.storage_options)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            group = None
        if group is not None and VALID in group:
            for path, shape in latents.items():
                if path not in group or tuple(group[path].shape[1:]) != shape:
                    have = tuple(group[path].shape[1:]) if path in group else "nothing"
                    raise ValueError(f"existing store holds {have} at {path}, not latents {shape}")
            if total_slots > group[VALID].shape[0]:
                for name in [*latents, *rows, *([CACHE_KEYS] if CACHE_KEYS in group else [])]:
                    arr = group[name]
                    arr.resize((total_slots, *arr.shape[1:]))
            group.attrs.update(description)
            return
        group = zarr.open_group(self.store_url, mode="w", storage_options=self.storage_options)
        group.attrs.update(description)
        n = self.spec.shard_size
        stems = (description.get("preprocessing") or {}).get("stems")
        if stems:
            group.attrs["stems"] = list(stems)
        for path, shape in latents.items():
            if stems:
                if len(shape) != 3 or shape[0] != len(stems):
                    raise ValueError(f"latents {shape} do not hold the {len(stems)} stems {list(stems)}")
                dims = ("sample", "stem", "channel", "t")
            else:
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
        group.create_array(LABELS, shape=(total_slots,), dtype="int64", chunks=(n,), fill_value=-1)
        group.create_array(KEYS, shape=(total_slots,), dtype=str, chunks=(n,), fill_value="")
        group.create_array(META, shape=(total_slots,), dtype=str, chunks=(n,), fill_value="")
        group.create_array(VALID, shape=(total_slots,), dtype=bool, chunks=(n,), fill_value=False)
        group.create_array(CACHE_KEYS, shape=(total_slots,), dtype=str, chunks=(n,), fill_value="")
        if BUCKET in rows:
            group.create_array(BUCKET, shape=(total_slots,), dtype=str, chunks=(n,), fill_value="")

    def open_shard(self, shard: int, slot_offset: int) -> ShardWriter:
        return ZarrShardWriter(self, shard, slot_offset)

    def read_latent(self, stats: dict, slot_offset: int, key: str) -> np.ndarray:
        group = zarr.open_group(self.store_url, mode="r", storage_options=self.storage_options)
        stop = min(slot_offset + self.spec.shard_size, group[KEYS].shape[0])
        rows = [i for i, k in enumerate(group[KEYS][slot_offset:stop]) if k == key]
        if not rows:
            raise KeyError(f"no row of {key!r} in shard {stats['shard']} ({stats['name']})")
        row = slot_offset + rows[0]
        return group[latent_path(str(group[BUCKET][row]) if BUCKET in group else None)][row]
