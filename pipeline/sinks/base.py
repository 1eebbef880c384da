"""What every sink provides: open a shard, write encoded samples, commit it atomically.

Every writer has the same shape (img2dataset's lesson), and one contract test runs over all sinks
in the registry. Sinks know nothing of the model: they receive int8 latents (and optionally the
entropy-coded bytes) plus metadata, and return what the manifest records about each shard.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import fsspec
import numpy as np

if TYPE_CHECKING:
    from ..formats import OutputFormat

LATENT_NPY = "npy"  # int8 .npy per sample; every other latent format is an entropy coding method


@dataclass
class EncodedSample:
    key: str
    label: int | None
    latent: np.ndarray  # int8 (C, h, w) or (C, l)
    meta: dict[str, Any]  # source key/uri, original size, crop box, audio offset/scale, cache key
    latent_bytes: bytes | None = None  # entropy-coded payload when latent_format != "npy"
    slot: int = 0  # the item's position within its shard's planned items (Zarr row = offset + slot)
    bucket: str | None = None  # "<W>x<H>" aspect bucket of the codec input (--buckets), else None
    latent_flip: np.ndarray | None = None  # --flip-pair: latent of the horizontally mirrored input
    latent_flip_bytes: bytes | None = None  # its entropy-coded payload when latent_format != "npy"


@dataclass
class ShardStats:
    """What the manifest records about a committed shard."""

    shard: int
    name: str  # path relative to the output root
    samples: int
    bytes: int
    sha256: str
    first_key: str | None
    last_key: str | None
    keys: list[str] = field(default_factory=list)
    # bucketed shards: one entry per bucket present (name, bucket, samples, bytes, sha256, keys_first,
    # keys_last); name/sha256 above then describe the first part. None (and absent) when unbucketed
    parts: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {
            "shard": self.shard,
            "name": self.name,
            "samples": self.samples,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "first_key": self.first_key,
            "last_key": self.last_key,
        }
        if self.parts is not None:
            d["parts"] = self.parts
        return d


@dataclass(frozen=True)
class SinkSpec:
    """Everything a sink needs, picklable so it travels to Ray workers; also the output part of a
    run's EncodeConfig (pipeline/config.py), checked against the registries when it is made."""

    output: str  # local path or fsspec URL of the output root
    format: str = "webdataset"  # the registered sink that writes it (pipeline/formats.py)
    latent_format: str = LATENT_NPY  # npy, or an entropy coding method (pipeline/codec/entropy.py)
    shard_size: int = 256  # samples per shard: the unit of work, of commit and of resume
    storage_options: dict[str, Any] = field(default_factory=dict)  # fsspec options for the output
    flip_pair: bool = False  # samples carry latent_flip too (Zarr creates latents_flip arrays)

    def __post_init__(self) -> None:
        from ..formats import output_format

        if not self.output:
            raise ValueError("--output: empty; accepted: a folder path or an fsspec URL")
        if isinstance(self.shard_size, bool) or not isinstance(self.shard_size, int) or self.shard_size < 1:
            raise ValueError(f"--shard-size: got {self.shard_size!r}; accepted: a whole number >= 1")
        if self.latent_format != LATENT_NPY:
            from ..codec.entropy import METHODS  # the codec package: only for coded latents

            if self.latent_format not in METHODS:
                accepted = ", ".join([LATENT_NPY, *sorted(METHODS)])
                raise ValueError(f"--latent-format: got {self.latent_format!r}; accepted: {accepted}")
        output_format(self.format).check_latent_format(self.format, self.latent_format)

    def filesystem(self) -> tuple[fsspec.AbstractFileSystem, str]:
        fs, root = fsspec.core.url_to_fs(self.output, **self.storage_options)
        return fs, root.rstrip("/")


class ShardWriter:
    """One shard: write() samples in order, then commit() (or abort())."""

    def write(self, sample: EncodedSample) -> None:
        raise NotImplementedError

    def commit(self) -> ShardStats:
        raise NotImplementedError

    def abort(self) -> None:
        """Drop a shard that could not be completed; nothing becomes visible."""


class Sink:
    """Driver-side lifecycle: prepare() before any shard, open_shard() on workers, finalize() last."""

    registry_name: str = ""
    # the format's entry: loaders that read it, size model, what it accepts (pipeline/formats.py)
    output_format: ClassVar[OutputFormat | None] = None

    def __init__(self, spec: SinkSpec):
        self.spec = spec

    def prepare(
        self,
        total_slots: int,
        sample_shape: tuple[int, ...] | dict[str, tuple[int, ...]] | None,
        description: dict,
    ) -> None:
        """Create whatever must exist before shards are written (e.g. a Zarr store sized N).

        sample_shape: the latent shape of every sample, a dict bucket name -> latent shape (--buckets),
        or None (variable shapes)."""

    def open_shard(self, shard: int, slot_offset: int) -> ShardWriter:
        raise NotImplementedError

    def shard_name(self, shard: int) -> str:
        raise NotImplementedError

    def read_latent(self, stats: dict, slot_offset: int, key: str) -> np.ndarray | bytes:
        """A committed sample's latent: the int8 array, or its entropy-coded bytes (.wlat).

        `stats` is the shard's marker/manifest entry. Used by append runs to take the statistics of
        an entry that a re-encode supersedes out of the run's statistics."""
        raise NotImplementedError


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Object stores have no rename (s3fs's mv is a server-side copy then a delete), but one PUT is
# atomic: the object appears whole or not at all. Everything else gets temp file + rename.
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2"})


def is_object_store(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return bool(OBJECT_STORES.intersection(protocols))


def atomic_write(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Readers see the whole file or nothing, never a partial one.

    Filesystems: write a temporary name, then rename; a failed write (disk full, I/O error) removes
    its temporary file. Object stores: one PUT (atomic there; a failed PUT leaves no object)."""
    if is_object_store(fs):
        fs.pipe_file(path, data)
        return
    if fs.isdir(path):  # a rename would move the file into it, and report success
        raise IsADirectoryError(f"{path} is a directory: a shard file cannot be written there")
    tmp = f"{path}.tmp-{hashlib.sha1(data).hexdigest()[:10]}"
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    try:
        with fs.open(tmp, "wb") as f:
            f.write(data)
        fs.mv(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):  # a directory in its place stays (rm_file refuses it)
            fs.rm_file(tmp)
        raise
