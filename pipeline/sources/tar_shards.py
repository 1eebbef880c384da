"""Tar / WebDataset shards of images (the `imagenet-1k-wds` shape), read member by member in place.

    shards:  a directory of .tar files, one .tar, or a brace pattern `train-{000000..000146}.tar`
    members: `<key>.jpg|.jpeg|.png|.webp|...` (the image), optional `<key>.cls` (int label) and
             `<key>.json` (its "label" is used when there is no .cls); other members are counted as
             skipped, by reason (manifest `source.skipped`, the summary)

Listing reads each shard's headers once and records every image member's data offset and size in
`item.meta`, so `read_bytes` seeks straight to the bytes: nothing is extracted to disk and no shard
is rescanned per sample. The key is the WebDataset key (member name up to the first dot of its
basename), made tar-safe; a key repeated across shards gets a hash of its "<shard>::<member>".
Items come in shard order (sorted paths), then archive order within a shard (an archive is
immutable, so this is as deterministic as sorting, and reads walk each shard forwards). Each shard
is one partition of the listing: a cluster reads the headers of many shards at once.

Members that would be dangerous to extract (`..` in the name, absolute names, symlinks, hardlinks,
devices, fifos, sparse files) are listed too, and their read raises `UnsafeTarMemberError`: they
become error rows ("unsafe tar member ..."), never crashes, never followed, never silently dropped.
Only uncompressed tars are supported (seeking into .tar.gz would mean decompressing from the start).
"""

from __future__ import annotations

import json
import posixpath
import re
import tarfile
from typing import Any

import fsspec
import pyarrow as pa

from ..registry import register_source
from .base import NoInputsError, Source, SourceItem, extension_reason, safe_key, skip
from .image_folder import IMAGE_EXTENSIONS
from .listing import PARTITION_SCHEMA, SCHEMA, Listing, MapFn, merge_partitions, serial_map

LABEL_MEMBER_MAX_BYTES = 1 << 16  # .cls / .json siblings larger than this are not read for labels
SKIPPED = "walloc.skipped"  # a partition table's metadata key: its members not listed, by reason (JSON)


class UnsafeTarMemberError(ValueError):
    """A tar member that must not be read as a sample (escaping name, link, device...)."""


def expand_shards(pattern: str) -> list[str]:
    """The shard paths named by an input: a brace pattern, one .tar, or every .tar under a folder."""
    if "{" in pattern:
        from braceexpand import braceexpand  # webdataset's own dependency

        return list(braceexpand(pattern))
    fs, path = fsspec.core.url_to_fs(pattern)
    if fs.isdir(path):
        return sorted(fs.unstrip_protocol(p) for p in fs.find(path) if p.endswith(".tar"))
    return [pattern]


def unsafe_reason(member: tarfile.TarInfo) -> str | None:
    """Why reading this member as a sample would be unsafe, or None."""
    name = member.name
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:[\\/]", name):
        return "absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return "name escapes the archive ('..')"
    if member.issym():
        return f"symlink to {member.linkname!r}"
    if member.islnk():
        return f"hardlink to {member.linkname!r}"
    if member.ischr() or member.isblk():
        return "device file"
    if member.isfifo():
        return "fifo"
    if member.issparse():
        return "sparse member (its bytes are not stored contiguously)"
    if not member.isreg():
        return f"not a regular file (type {member.type!r})"
    return None


def wds_split(name: str) -> tuple[str, str]:
    """(key, extension) the way WebDataset groups members: the extension starts at the first dot
    of the basename."""
    directory, base = posixpath.split(name)
    stem, dot, ext = base.partition(".")
    return (posixpath.join(directory, stem) if directory else stem), (ext.lower() if dot else "")


def _label_from(data: bytes, ext: str) -> int | None:
    try:
        if ext == "cls":
            return int(data.decode("utf-8").strip())
        doc = json.loads(data)
        value = doc.get("label", doc.get("cls")) if isinstance(doc, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    except (ValueError, UnicodeDecodeError):
        return None


def _members(tar: tarfile.TarFile, shard: str):
    """The members of a tar, stopping quietly at a truncated end: the member cut short is already
    listed, and its read fails ("truncated"). Any other damage names the shard."""
    members = iter(tar)
    while True:
        try:
            yield next(members)
        except StopIteration:
            return
        except tarfile.ReadError as err:
            if "unexpected end of data" in str(err):
                return
            raise tarfile.ReadError(f"{shard}: {err}") from err


def scan_shard(
    shard: str, extensions: set[str], skipped: dict[str, int] | None = None
) -> list[dict[str, Any]]:
    """One record per image member of a shard, in archive order: name, key, offset, size, label,
    unsafe reason. Reads headers, plus the small .cls/.json siblings for labels. Members that are
    neither images nor labels read are counted in `skipped`, by reason."""
    skipped = {} if skipped is None else skipped
    records: list[dict[str, Any]] = []
    labels: dict[str, dict[str, int]] = {}
    with fsspec.open(shard, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
        for member in _members(tar, shard):
            if member.isdir():
                continue
            key, ext = wds_split(member.name)
            reason = unsafe_reason(member)
            if ext in ("cls", "json") and reason is None and member.size <= LABEL_MEMBER_MAX_BYTES:
                handle = tar.extractfile(member)
                label = _label_from(handle.read(), ext) if handle is not None else None
                if label is not None:
                    labels.setdefault(key, {})[ext] = label
                else:
                    skip(skipped, f"tar member .{ext} not used as a label")
                continue
            if "." + ext.rsplit(".", 1)[-1] not in extensions:
                skip(skipped, f"tar member {extension_reason(member.name)}")
                continue
            records.append(
                {
                    "name": member.name,
                    "key": key,
                    "offset": member.offset_data,
                    "size": member.size,
                    "mtime": member.mtime,
                    "unsafe": reason,
                }
            )
    for r in records:
        found = labels.get(r["key"], {})
        r["label"] = found.get("cls", found.get("json"))
    return records


@register_source("wds-tars")
class TarShardSource(Source):
    """Images inside tar shards; see the module docstring for the layout and the safety rules."""

    modality = "image"

    def __init__(self, path: str, extensions: set[str] | None = None):
        self.root = str(path)
        self.extensions = {e.lower() for e in (extensions or IMAGE_EXTENSIONS)}
        self.skipped: dict[str, int] = {}  # members and files not listed, by reason (known once listed)
        shards = self.shards()
        listed = "{" not in self.root and _isdir(self.root)  # found by listing: they exist
        missing = [] if listed else [s for s in shards if not _exists(s)]
        if not shards or missing:
            what = f"{len(missing)} of {len(shards)} shards missing, e.g. {missing[0]}" if missing else "none"
            raise NoInputsError(f"no tar shards for {self.root} ({what})")

    @staticmethod
    def detect(path: str) -> bool:
        """A .tar, a brace pattern of .tar, or a folder holding .tar files (top level only: cheap)."""
        if "{" in path and ".tar" in path:
            return True
        fs, p = fsspec.core.url_to_fs(path)
        if p.endswith(".tar"):
            return fs.isfile(p)
        return fs.isdir(p) and any(q.endswith(".tar") for q in fs.ls(p, detail=False))

    def shards(self) -> list[str]:
        """The shard paths, in listing order (computed, not stored: sources travel to workers)."""
        return expand_shards(self.root)

    def list_partition(self, shard: str) -> pa.Table:
        """One shard's image members as the listing's columns (keys unique across shards later);
        the members that are not samples, counted by reason, in the table's metadata (SKIPPED)."""
        columns: dict[str, list] = {n: [] for n in ("key", "id", "uri", "label", "fingerprint", "meta")}
        skipped: dict[str, int] = {}
        for r in scan_shard(shard, self.extensions, skipped):
            meta: dict[str, Any] = {"shard": posixpath.basename(shard), "member": r["name"]}
            if r["unsafe"]:
                meta["unsafe"] = r["unsafe"]
            else:
                meta |= {"tar_offset": r["offset"], "tar_size": r["size"]}
            columns["key"].append(safe_key(r["key"]))
            columns["id"].append(f"{shard}::{r['name']}")
            columns["uri"].append(f"{shard}::{r['name']}")
            columns["label"].append(r["label"])
            # the member's header (size, mtime) changes when a rewritten shard holds other bytes
            columns["fingerprint"].append(f"{r['size']}:tar-mtime={r['mtime']}")
            columns["meta"].append(json.dumps(meta, sort_keys=True))
        table = pa.table(columns, schema=PARTITION_SCHEMA)
        return table.replace_schema_metadata({SKIPPED: json.dumps(skipped)})

    def listing(self, limit: int | None = None, map_fn: MapFn | None = None) -> Listing:
        """One partition per shard (`map_fn`: Ray tasks or threads, chosen by the runtime); what is
        not listed (members of every shard, other files of a folder input) is counted in self.skipped."""
        tables = (map_fn or serial_map)(self.list_partition, [(s,) for s in self.shards()])
        skipped = self._files_not_shards()
        for t in tables:
            for reason, n in json.loads((t.schema.metadata or {}).get(SKIPPED.encode(), b"{}")).items():
                skip(skipped, reason, n)
        self.skipped = dict(sorted(skipped.items()))
        tables = [t.replace_schema_metadata(None) for t in tables]
        listing = Listing(merge_partitions(tables).select(SCHEMA.names))
        return listing.limit(limit) if limit is not None else listing

    def list_items(self) -> list[SourceItem]:
        return self.listing().items()

    def read_bytes(self, item: SourceItem) -> bytes:
        meta = item.meta
        member = meta.get("member") or item.uri.rsplit("::", 1)[1]  # names may hold "::" themselves
        shard = item.uri[: -len(member) - 2]
        if "tar_offset" not in meta and "unsafe" not in meta:  # an item built elsewhere: find it
            meta = _locate(shard, member)
        if meta.get("unsafe"):
            raise UnsafeTarMemberError(f"unsafe tar member {member!r} in {shard}: {meta['unsafe']}")
        offset, size = int(meta["tar_offset"]), int(meta["tar_size"])
        with fsspec.open(shard, "rb") as f:
            f.seek(offset)
            data = f.read(size)
        if len(data) != size:
            raise OSError(f"tar member {member!r} in {shard} is truncated ({len(data)} of {size} bytes)")
        return data

    def _files_not_shards(self) -> dict[str, int]:
        """A folder input: its files that are not .tar shards, by reason."""
        skipped: dict[str, int] = {}
        if "{" not in self.root and _isdir(self.root):
            fs, path = fsspec.core.url_to_fs(self.root)
            for p in fs.find(path):
                if not p.endswith(".tar"):
                    skip(skipped, extension_reason(p))
        return skipped

    def describe(self) -> dict[str, Any]:
        out = {"kind": self.registry_name, "root": self.root, "shards": len(self.shards())}
        return out | ({"skipped": self.skipped} if self.skipped else {})  # known once listed


def _isdir(path: str) -> bool:
    fs, p = fsspec.core.url_to_fs(path)
    return fs.isdir(p)


def _exists(path: str) -> bool:
    fs, p = fsspec.core.url_to_fs(path)
    return fs.isfile(p)


def _locate(shard: str, member: str) -> dict[str, Any]:
    """Offset/size (or the unsafe reason) of one member, by scanning the shard's headers."""
    with fsspec.open(shard, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
        for m in tar:
            if m.name == member:
                reason = unsafe_reason(m)
                return {"unsafe": reason} if reason else {"tar_offset": m.offset_data, "tar_size": m.size}
    raise FileNotFoundError(f"no member {member!r} in {shard}")
