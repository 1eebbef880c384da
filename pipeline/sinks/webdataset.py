"""WebDataset tar shards: `<key>.latent.npy|.latent.wlat`, `<key>.cls`, `<key>.json` per sample.

Tars are built in memory (a shard is bounded by --shard-size) with fixed mtime/owner, so the same
samples give the same bytes; then written under a temporary name and renamed. The stock
`webdataset` library reads them with no project code.
"""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np

from ..registry import register_sink
from .base import EncodedSample, ShardStats, ShardWriter, Sink, atomic_write, sha256_bytes

LATENT_NPY = "latent.npy"
LATENT_CODED = "latent.wlat"  # pipeline.codec.entropy payload (header + coded planes)


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


class TarShardWriter(ShardWriter):
    def __init__(self, sink: WebDatasetSink, shard: int):
        self.sink, self.shard = sink, shard
        self.buffer = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buffer, mode="w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
        self.keys: list[str] = []

    def _add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o444
        info.uname = info.gname = "walloc"
        self.tar.addfile(info, io.BytesIO(data))

    def write(self, sample: EncodedSample) -> None:
        if sample.latent_bytes is not None:
            self._add(f"{sample.key}.{LATENT_CODED}", sample.latent_bytes)
        else:
            self._add(f"{sample.key}.{LATENT_NPY}", npy_bytes(sample.latent))
        if sample.label is not None:
            self._add(f"{sample.key}.cls", str(sample.label).encode())
        self._add(f"{sample.key}.json", json.dumps(sample.meta, sort_keys=True).encode())
        self.keys.append(sample.key)

    def commit(self) -> ShardStats:
        self.tar.close()
        data = self.buffer.getvalue()
        fs, root = self.sink.spec.filesystem()
        name = self.sink.shard_name(self.shard)
        atomic_write(fs, f"{root}/{name}", data)
        return ShardStats(
            shard=self.shard,
            name=name,
            samples=len(self.keys),
            bytes=len(data),
            sha256=sha256_bytes(data),
            first_key=self.keys[0] if self.keys else None,
            last_key=self.keys[-1] if self.keys else None,
            keys=list(self.keys),
        )

    def abort(self) -> None:
        self.tar.close()


@register_sink("webdataset")
class WebDatasetSink(Sink):
    def shard_name(self, shard: int) -> str:
        return f"shard-{shard:06d}.tar"

    def open_shard(self, shard: int, slot_offset: int) -> ShardWriter:
        return TarShardWriter(self, shard)
