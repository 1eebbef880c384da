"""WebDataset tar shards: `<key>.latent.npy|.latent.wlat`, `<key>.cls`, `<key>.json` per sample.

Grouped stems (MUSDB runs: the sample's meta lists `stems`, its latent is (S, *latent)): one entry
per stem under the one key, `<key>.<stem>.latent.npy|.wlat` (e.g. `song_000003.mixture.latent.npy`,
`song_000003.vocals.latent.npy`), so every stock WebDataset reader gets the whole window as one sample.

With --flip-pair also `<key>.latent_flip.npy|.latent_flip.wlat`; with --buckets a shard is one tar
per bucket present in it, `shard-000012-b320x192.tar`, listed as the shard's `parts`.

Tars are built in memory (a shard is bounded by --shard-size) with fixed mtime/owner, so the same
samples give the same bytes; then written under a temporary name and renamed. The stock
`webdataset` library reads them with no project code.
"""

from __future__ import annotations

import io
import json
import math
import tarfile

import numpy as np

from ..formats import OutputFormat
from ..registry import register_sink
from .base import EncodedSample, ShardStats, ShardWriter, Sink, atomic_write, sha256_bytes

LATENT_NPY = "latent.npy"
LATENT_CODED = "latent.wlat"  # pipeline.codec.entropy payload (header + coded planes)
LATENT_FLIP_NPY = "latent_flip.npy"  # --flip-pair: latent of the horizontally mirrored input
LATENT_FLIP_CODED = "latent_flip.wlat"


TAR_BLOCK = 512  # tar member header, and the unit data is padded to
TAR_RECORD = 10240  # Python's tarfile pads every archive to a multiple of this (per-shard overhead)
NPY_HEADER = 128  # .npy header of a small int8 array
META_BYTES = 700  # per-sample JSON metadata (key, source URI, sha256s, crop box, sizes): typical size


class TarSizeModel:
    """Bytes of a tar shard: a header block per member, data padded to 512, the archive to 10240.
    Entropy-coded latents (.wlat) are smaller than the npy size used here: an upper bound."""

    @staticmethod
    def _member(size: float) -> float:
        return TAR_BLOCK + math.ceil(size / TAR_BLOCK) * TAR_BLOCK

    def bytes_per_sample(
        self, latent_bytes: float, labelled: bool, flip_pair: bool = False, meta_bytes: float | None = None
    ) -> float:
        latents = 2 if flip_pair else 1  # <key>.latent.npy [+ <key>.latent_flip.npy], .cls, .json
        return (
            latents * self._member(NPY_HEADER + latent_bytes)
            + (self._member(4) if labelled else 0)
            + self._member(META_BYTES if meta_bytes is None else meta_bytes)
        )

    def shard_overhead(self) -> int:
        """End-of-archive blocks and padding to a whole record: 1024 to 11,263 bytes; ~one record."""
        return TAR_RECORD


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def stem_entries(sample: EncodedSample, stems: list[str]) -> list[tuple[str, bytes]]:
    """(entry name, bytes) per stem of a grouped sample: `<stem>.latent.npy`, or `<stem>.latent.wlat`
    coded like the sample's payload (same method, bits, codec hash and size, one stem each)."""
    z = np.asarray(sample.latent)
    if z.shape[0] != len(stems):
        raise ValueError(f"{sample.key}: latent {z.shape} does not hold the {len(stems)} stems {stems}")
    if sample.latent_flip is not None:
        raise ValueError(f"{sample.key}: --flip-pair is for images, not grouped stems")
    if sample.latent_bytes is None:
        return [(f"{stem}.{LATENT_NPY}", npy_bytes(z[i])) for i, stem in enumerate(stems)]
    import torch

    from ..codec import entropy

    h = entropy.read_header(sample.latent_bytes)
    return [
        (
            f"{stem}.{LATENT_CODED}",
            entropy.encode_latents(
                torch.from_numpy(np.ascontiguousarray(z[i])),
                bits=h.bits,
                codec_hash=h.codec_hash,
                method=h.method,
                size=h.size,
            ),
        )
        for i, stem in enumerate(stems)
    ]


class _Tar:
    """One tar built in memory with fixed mtime/owner (same samples, same bytes)."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buffer, mode="w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
        self.keys: list[str] = []

    def add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o444
        info.uname = info.gname = "walloc"
        self.tar.addfile(info, io.BytesIO(data))

    def close(self) -> bytes:
        self.tar.close()
        return self.buffer.getvalue()


class TarShardWriter(ShardWriter):
    """A shard: one tar, or with --buckets one tar per bucket present (`shard-000012-b320x192.tar`)."""

    def __init__(self, sink: WebDatasetSink, shard: int):
        self.sink, self.shard = sink, shard
        self.tars: dict[str | None, _Tar] = {}  # bucket (None: unbucketed) -> its tar
        self.keys: list[str] = []

    def write(self, sample: EncodedSample) -> None:
        tar = self.tars.setdefault(sample.bucket, _Tar())
        stems = sample.meta.get("stems")
        if stems:
            for name, data in stem_entries(sample, stems):
                tar.add(f"{sample.key}.{name}", data)
        elif sample.latent_bytes is not None:
            tar.add(f"{sample.key}.{LATENT_CODED}", sample.latent_bytes)
        else:
            tar.add(f"{sample.key}.{LATENT_NPY}", npy_bytes(sample.latent))
        if sample.latent_flip_bytes is not None:
            tar.add(f"{sample.key}.{LATENT_FLIP_CODED}", sample.latent_flip_bytes)
        elif sample.latent_flip is not None:
            tar.add(f"{sample.key}.{LATENT_FLIP_NPY}", npy_bytes(sample.latent_flip))
        if sample.label is not None:
            tar.add(f"{sample.key}.cls", str(sample.label).encode())
        tar.add(f"{sample.key}.json", json.dumps(sample.meta, sort_keys=True).encode())
        tar.keys.append(sample.key)
        self.keys.append(sample.key)

    def commit(self) -> ShardStats:
        fs, root = self.sink.spec.filesystem()
        stats = dict(
            shard=self.shard,
            samples=len(self.keys),
            first_key=self.keys[0] if self.keys else None,
            last_key=self.keys[-1] if self.keys else None,
            keys=list(self.keys),
        )
        if set(self.tars) <= {None}:  # unbucketed (or empty): one tar, as always
            data = self.tars.pop(None, _Tar()).close()
            name = self.sink.shard_name(self.shard)
            atomic_write(fs, f"{root}/{name}", data)
            return ShardStats(name=name, bytes=len(data), sha256=sha256_bytes(data), **stats)
        if None in self.tars:
            raise ValueError(f"shard {self.shard} mixes bucketed and unbucketed samples")
        parts = []
        for bucket in sorted(self.tars):  # sorted: the part order is part of the shard's identity
            tar = self.tars[bucket]
            data = tar.close()
            name = self.sink.part_name(self.shard, bucket)
            atomic_write(fs, f"{root}/{name}", data)
            parts.append(
                {
                    "name": name,
                    "bucket": bucket,
                    "samples": len(tar.keys),
                    "bytes": len(data),
                    "sha256": sha256_bytes(data),
                    "keys_first": tar.keys[0],
                    "keys_last": tar.keys[-1],
                }
            )
        return ShardStats(
            name=parts[0]["name"],
            bytes=sum(p["bytes"] for p in parts),
            sha256=parts[0]["sha256"],
            parts=parts,
            **stats,
        )

    def abort(self) -> None:
        for tar in self.tars.values():
            tar.close()


@register_sink("webdataset")
class WebDatasetSink(Sink):
    output_format = OutputFormat(
        stream="pipeline.loaders.webdataset:LatentWebDataset",
        size=TarSizeModel(),
        coded_latents=True,
    )

    def shard_name(self, shard: int) -> str:
        return f"shard-{shard:06d}.tar"

    def part_name(self, shard: int, bucket: str) -> str:
        """The tar of one bucket of a bucketed shard."""
        return f"shard-{shard:06d}-b{bucket}.tar"

    def open_shard(self, shard: int, slot_offset: int) -> ShardWriter:
        return TarShardWriter(self, shard)

    def read_latent(self, stats: dict, slot_offset: int, key: str) -> np.ndarray | bytes:
        fs, root = self.spec.filesystem()
        for name in [p["name"] for p in stats.get("parts") or []] or [stats["name"]]:
            with fs.open(f"{root}/{name}", "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
                for member, coded in ((f"{key}.{LATENT_NPY}", False), (f"{key}.{LATENT_CODED}", True)):
                    try:
                        data = tar.extractfile(member).read()
                    except KeyError:
                        continue
                    return data if coded else np.load(io.BytesIO(data), allow_pickle=False)
                stems = [m for m in tar.getnames() if m.startswith(f"{key}.") and m.count(".") == 3]
                if stems:  # grouped stems: (S, *latent), in the tar's order (mixture first)
                    return np.stack([_stem_latent(tar.extractfile(m).read(), m) for m in stems])
        raise KeyError(f"no latent of {key!r} in shard {stats['shard']} ({stats['name']})")


def _stem_latent(data: bytes, member: str) -> np.ndarray:
    if member.endswith(LATENT_CODED):
        from ..codec import entropy

        return entropy.decode_latents(data)[0].numpy()
    return np.load(io.BytesIO(data), allow_pickle=False)
