"""WebDataset latent shards -> PyTorch, with a deterministic global order and exact mid-epoch resume.

    committed samples (manifest shards / bucket parts, minus superseded entries)
      -> epoch order from (seed, epoch): tars shuffled, samples shuffled within blocks of shuffle_buffer
      -> remaining positions split: ranks (counts differ by at most one), then DataLoader workers
      -> read whole tars (sha256-checked, the last few cached) -> keep this consumer's samples
      -> flip pair / dequantize / normalize / audio mask -> batches (one bucket per batch if bucketed)

Reading is by tar, assignment is by sample: a consumer's range may start or end inside a tar, so two
consumers may both read a boundary tar, each keeping its own samples. `state_dict()` records the
consumed positions of the epoch; `load_state_dict()` (with any number of ranks or workers) yields
exactly the samples not seen yet. Iterate through `.loader(num_workers=...)` to resume exactly with
DataLoader workers (it counts what the training loop received, not what workers prefetched).
`follow=True` reads a run still being written (shards as they commit; see follow.py).
"""

from __future__ import annotations

import hashlib
import io
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import fsspec
import numpy as np
from webdataset.tariterators import group_by_keys, tar_file_expander

from .common import ShardFile, has_field, latent_from_sample
from .order import Catalog, fingerprint
from .stream import LatentStream, Raw


class TamperedShardError(ValueError):
    """A shard whose bytes do not match the sha256 the manifest recorded."""


class LatentWebDataset(LatentStream):
    """Iterate samples, or with batch_size batches, from one or more WebDataset runs: each a Batch
    (batch.py) that unpacks as (latents, labels) and carries .mask (audio), .meta (with_meta), .key.

    Grouped stems (MUSDB runs): the latent is (S, *latent), stems in `info.stems` order (mixture
    first), batches (B, S, *latent): every item holds one whole window.

    output: "float" (dequantized) or "int" (stored integers). batch_size: stack into (B, C, h, w).
    shuffle_shards / shuffle_buffer: tar order shuffled per epoch / samples shuffled within blocks of
    this many. cache_mb: tars kept in memory per process (the last ones read). resampled: infinite
    stream of tars drawn with replacement (no epochs, no resume).
    rank / world_size: default torch.distributed, else RANK / WORLD_SIZE. flip="pair": the stored
    mirrored latent for about half of the samples, chosen per (seed, epoch, key). normalize: standardize
    per channel with the manifest's statistics. with_mask: (T,) valid steps (audio; default on for
    audio runs). bucket_batches: one bucket per batch (default on for bucketed runs with batch_size).
    allow_mixed: read runs of different codecs/preprocessing together. follow: read a run in progress
    (poll seconds between looks; codec= names the codec until its manifest exists). verify: sha256.
    """

    def __init__(self, root: str | list[str], *, verify: bool = True, cache_mb: int = 128, **kwargs: Any):
        self.verify, self.cache_bytes = verify, cache_mb << 20
        super().__init__(root, **kwargs)
        self._tars: OrderedDict[str, tuple[int, list[dict[str, Any]]]] = OrderedDict()
        if not self.follow and not any(i.shard_files() for i in self.infos):
            raise FileNotFoundError(f"{self.info.root}: the manifest lists no WebDataset shards")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_tars"] = OrderedDict()  # workers read their own tars
        return state

    @property
    def urls(self) -> list[str]:
        return [f.url for f in self.files]

    # --- reading tars -----------------------------------------------------------------------------
    def _tar(self, file: ShardFile) -> list[dict[str, Any]]:
        """The samples of a tar (whole, sha256-checked); the tars read last are kept (up to cache_mb MiB
        per process: a shuffle block or a range that starts inside a tar reads it once)."""
        if file.url in self._tars:
            self._tars.move_to_end(file.url)
            return self._tars[file.url][1]
        with fsspec.open(file.url, "rb", **self.storage_options) as f:
            data = f.read()
        if self.verify and hashlib.sha256(data).hexdigest() != file.sha256:
            raise TamperedShardError(
                f"{file.url}: sha256 {hashlib.sha256(data).hexdigest()[:12]} does not match the manifest's "
                f"{file.sha256[:12]}; the shard was modified or corrupted"
            )
        samples = list(group_by_keys(tar_file_expander([{"url": file.url, "stream": io.BytesIO(data)}])))
        if len(samples) != file.samples:
            raise TamperedShardError(f"{file.url}: {len(samples)} samples, the manifest says {file.samples}")
        self._tars[file.url] = (len(data), samples)
        while len(self._tars) > 2 and sum(size for size, _ in self._tars.values()) > self.cache_bytes:
            self._tars.popitem(last=False)
        return samples

    def _raw(self, sample: dict[str, Any], run: int) -> Raw:
        where = f"{sample.get('__url__')} {sample.get('__key__')}"
        info = self.infos[run]
        flip = None
        if self.flip == "pair" and has_field(sample, "latent_flip"):
            flip = latent_from_sample(sample, info.codec_hash, "latent_flip")
        return Raw(
            latent=latent_from_sample(sample, info.codec_hash, stems=info.stems),
            latent_flip=flip,
            label=int(sample["cls"]) if "cls" in sample else -1,
            meta=sample.get("json"),
            key=sample["__key__"],
            run=run,
            where=where,
        )

    # --- catalog ----------------------------------------------------------------------------------
    def _build_catalog(self) -> Catalog:
        self.files: list[ShardFile] = []
        self._file_run: list[int] = []
        groups, positions = [], []
        for run, info in enumerate(self.infos):
            superseded = info.superseded
            for file in info.shard_files():
                t = len(self.files)
                self.files.append(file)
                self._file_run.append(run)
                keep = np.arange(file.samples)
                if any(s == file.shard for s, _ in superseded):  # rare: look at the tar's keys
                    keys = [s["__key__"] for s in self._tar(file)]
                    keep = np.array([i for i, k in enumerate(keys) if (file.shard, k) not in superseded])
                groups.append(np.full(len(keep), t, dtype=np.int64))
                positions.append(keep.astype(np.int64))
        self._group = np.concatenate(groups) if groups else np.zeros(0, dtype=np.int64)
        self._pos = np.concatenate(positions) if positions else np.zeros(0, dtype=np.int64)
        names = tuple(sorted({f.bucket for f in self.files if f.bucket is not None}))
        code = {b: i for i, b in enumerate(names)}
        bucket = np.array([code.get(self.files[t].bucket, -1) for t in self._group], dtype=np.int64)
        ident = fingerprint(
            [(f.url.rsplit("/", 1)[-1], f.sha256, f.samples) for f in self.files], self._group, self._pos
        )
        return Catalog(group=self._group, bucket=bucket, bucket_names=names, ident=ident)

    @property
    def files(self) -> list[ShardFile]:
        if "files" not in self.__dict__:
            self.catalog  # noqa: B018 (builds it)
        return self.__dict__["files"]

    @files.setter
    def files(self, value: list[ShardFile]) -> None:
        self.__dict__["files"] = value

    def _read(self, samples: np.ndarray) -> list[Raw]:
        out = []
        for i in samples:
            t = int(self._group[i])
            out.append(self._raw(self._tar(self.files[t])[int(self._pos[i])], self._file_run[t]))
        return out

    def _read_entry(self, run: int, entry: dict[str, Any]) -> Iterator[tuple[Raw, str | None]]:
        info = self.infos[run]
        superseded = info.superseded
        for file in info.shard_files([entry]):
            for sample in self._tar(file):
                if (file.shard, sample["__key__"]) not in superseded:
                    yield self._raw(sample, run), file.bucket
