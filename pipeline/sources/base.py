"""What every source provides: a deterministic listing of items, and their raw bytes.

Sources know nothing of decoding or the codec. Listing is sorted and stable; keys are tar-safe
(no dots, no path separators) and unique, so that the same inputs always give the same shards.
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import fsspec

SAFE_KEY = re.compile(r"[^A-Za-z0-9_-]+")
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")  # schemas/sample.schema.json's key pattern


class NoInputsError(FileNotFoundError):
    """The input exists but holds nothing this source takes (e.g. a folder of .txt files): the user's
    mistake, told in one line (exit 2), not a bug."""


class UnsafeKeyError(ValueError):
    """A listing whose keys could name files outside a shard (or collide): the run is refused."""


@dataclass(frozen=True)
class SourceItem:
    """One input sample: where its bytes are, its label, and what to record about it."""

    key: str  # tar-safe, unique within the source
    uri: str  # path, fsspec URL, or "<tar path>::<member>"
    label: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. class name, segment offset
    # cheap "have the bytes changed?" token (size + mtime, or ETag): what --mode append compares to
    # re-encode changed sources; None = unknown (never counted as changed). Not part of the listing
    # hash nor of the sample's metadata: it lives in the shard markers only.
    fingerprint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def safe_key(text: str) -> str:
    """A tar-safe key from a relative path: separators and dots become '_' (webdataset splits on '.')."""
    return SAFE_KEY.sub("_", text).strip("_") or "item"


def unique_keys(names: list[str], ids: list[str] | None = None) -> list[str]:
    """safe_key for each name; names whose keys collide get a short hash of the full name appended.

    `ids` (one per name, unique) are hashed instead of the names: for sources whose names may repeat
    verbatim (the same WebDataset key in two shards), the hash must come from something unique.
    """
    keys = [safe_key(n) for n in names]
    ids = names if ids is None else ids
    seen: dict[str, int] = {}
    for k in keys:
        seen[k] = seen.get(k, 0) + 1
    return [
        k if seen[k] == 1 else f"{k}_{hashlib.sha1(i.encode()).hexdigest()[:8]}"
        for k, i in zip(keys, ids, strict=True)
    ]


def check_keys(items: list[SourceItem]) -> None:
    """Refuse a listing with keys that are not tar-safe or not unique, whatever source made it.

    Keys become tar member names and Zarr/metadata keys: `../x` or `/etc/x` would be a path for
    whoever extracts a shard, and a repeated key would merge two samples in a WebDataset reader.
    The bundled sources make safe keys (safe_key, unique_keys); this check holds a custom source to
    the same rule before anything is written."""
    bad = [it.key for it in items if not isinstance(it.key, str) or not KEY_PATTERN.match(it.key)]
    if bad:
        shown = ", ".join(repr(k) for k in bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise UnsafeKeyError(
            f"{len(bad)} key(s) are not tar-safe ([A-Za-z0-9_-]+): {shown}; make them with "
            "pipeline.sources.base.unique_keys"
        )
    counts = collections.Counter(it.key for it in items)
    repeated = sorted(k for k, n in counts.items() if n > 1)
    if repeated:
        raise UnsafeKeyError(f"{len(repeated)} key(s) repeat in the listing: {', '.join(repeated[:5])}")


def listing_hash(items: list[SourceItem]) -> str:
    """Identifies a listing (keys, uris, labels): resume refuses to continue a different one."""
    h = hashlib.sha256()
    for it in items:
        h.update(json.dumps([it.key, it.uri, it.label], separators=(",", ":")).encode() + b"\n")
    return h.hexdigest()


# object-store content tags first (they change with the bytes), then modification times
_TAG_FIELDS = ("ETag", "etag", "md5Hash", "crc32c", "checksum")
_TIME_FIELDS = ("mtime", "LastModified", "last_modified", "updated", "modified", "mtime_ns")


def fingerprint_from_info(info: dict[str, Any]) -> str | None:
    """A token that changes when a file's bytes change, from an fsspec info() / find(detail=True)
    entry: size plus the store's ETag/hash when it has one, else its modification time."""
    size = info.get("size")
    for name in _TAG_FIELDS + _TIME_FIELDS:
        value = info.get(name)
        if value is not None and value != "":
            return f"{size}:{name}={value}"
    return None if size is None else f"{size}"


def fill_fingerprints(items: list[SourceItem], storage_options: dict[str, Any] | None = None):
    """Items with a fingerprint from one info() per distinct plain-file URI (audio windows share
    their file's); items that already have one, and URIs that are not files (`::` tar members, `#`
    dataset rows), are left as they are. Costs one stat per file: sources that list with details
    (image folders, tars) set fingerprints while listing instead."""
    import dataclasses

    cache: dict[str, str | None] = {}
    out = []
    for it in items:
        if it.fingerprint is None and "::" not in it.uri and "#" not in it.uri:
            if it.uri not in cache:
                try:
                    fs, path = fsspec.core.url_to_fs(it.uri, **(storage_options or {}))
                    cache[it.uri] = fingerprint_from_info(fs.info(path))
                except Exception:  # noqa: BLE001 - no fingerprint: the item is never seen as changed
                    cache[it.uri] = None
            it = dataclasses.replace(it, fingerprint=cache[it.uri])
        out.append(it)
    return out


class Source:
    """Base class: subclasses list items and read their bytes."""

    registry_name: str = ""
    modality: str = "image"  # "image", "raster" or "audio": which preprocessing applies
    detect_priority: int = 100  # auto-detection asks lower numbers first (then by name)

    @classmethod
    def options_from_policy(cls, policy: Any) -> dict[str, Any]:
        """Constructor options this kind takes from the run's settings for its modality (audio:
        window, hop, rate from AudioSettings). Explicit `source_options` override these; most kinds
        need nothing from the run."""
        return {}

    def list_items(self) -> list[SourceItem]:
        raise NotImplementedError

    def listing(self, limit: int | None = None, map_fn=None):
        """The run's inputs as a columnar Listing (sources/listing.py), the first `limit` of them.

        This default lists items, then stats the files that have no fingerprint yet (one stat per
        file, C4); sources of very many inputs override it to build the columns without objects, and
        partitioned ones run their partitions through `map_fn` (listing.MapFn: Ray tasks or threads,
        chosen by the runtime)."""
        from .listing import Listing

        items = self.list_items()
        if limit is not None:
            items = items[:limit]
        return Listing.from_items(fill_fingerprints(items, getattr(self, "storage_options", None)))

    def read_bytes(self, item: SourceItem) -> bytes:
        raise NotImplementedError

    def label_map(self) -> dict[str, int]:
        """Class name -> label index ({} when the source has no labels)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """What the manifest records about the source."""
        return {"kind": self.registry_name}

    def grouped_stems(self) -> tuple[str, ...] | None:
        """Names of the signals each item holds together (MUSDB: mixture and stems), or None: one
        signal per item. The preprocessor then decodes an item into one array per stem, stacked."""
        return None


def skip(skipped: dict[str, int], reason: str, n: int = 1) -> None:
    """Count n files under an input that are not listed, by reason (manifest `source.skipped`, the
    run's summary): every file is either an input or counted, never silently dropped."""
    if n:
        skipped[reason] = skipped.get(reason, 0) + n


def extension_reason(path: str) -> str:
    """The skip reason of a file whose extension the source does not take ('extension .txt')."""
    suffix = Path(path).suffix.lower()
    return f"extension {suffix}" if suffix else "no extension"


def find_relpaths(root: str, extensions: set[str]) -> tuple[list[str], dict[str, int]]:
    """Sorted paths (relative to root) of the files with these extensions, and the other files
    counted by reason (skip); a file root lists itself."""
    fs, p = fsspec.core.url_to_fs(root)
    if fs.isfile(p):
        return [Path(p).name], {}
    base = p.rstrip("/")
    found, skipped = [], {}
    for f in sorted(fs.find(p)):
        if Path(f).suffix.lower() in extensions:
            found.append(f[len(base) + 1 :])
        else:
            skip(skipped, extension_reason(f))
    return found, dict(sorted(skipped.items()))
