"""Image folders, including the ImageNet layout (`<root>/<wnid>/<file>.JPEG`, labels from folders)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc

from ..registry import register_source
from .base import NoInputsError, Source, SourceItem, extension_reason, fingerprint_from_info, safe_key, skip
from .listing import SCHEMA, Listing, MapFn, merge_partitions, serial_map

# torchvision's ImageFolder (IMG_EXTENSIONS: .jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp) and GIF
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}


@register_source("image-folder")
class ImageFolderSource(Source):
    """Every image file under `root`, sorted by relative path.

    With `labels="folders"` (the default when every image sits in a sub-folder) the image's parent
    folder is its class, as in ImageNet's `train/<wnid>/<file>.JPEG` (whether the root is the
    dataset or its split folder); classes are indexed in sorted order.

    The listing is partitioned by the root's entries: each top-level folder (an ImageNet class, a
    bucket prefix) is walked by its own task (`listing.MapFn`: Ray tasks or threads), consecutive
    top-level files form one more; opening the source only reads the root and walks until the first
    image, so a missing or empty input is told before any work starts.
    """

    modality = "image"

    def __init__(
        self,
        root: str,
        labels: str = "auto",
        extensions: set[str] | None = None,
        storage_options: dict[str, Any] | None = None,
    ):
        self.root = str(root)
        # fsspec options for an object-store root (endpoint, credentials); they travel to the workers
        # with the source and are never written to the manifest
        self.storage_options = dict(storage_options or {})
        self.fs, self.path = fsspec.core.url_to_fs(self.root, **self.storage_options)
        self.extensions = {("." + e.lower().lstrip(".")) for e in (extensions or IMAGE_EXTENSIONS)}
        self._files, self._dirs, self._top_skipped = top_entries(self.fs, self.path)
        top_images = any(self._accepts(p) for p, _ in self._files)
        if not top_images and not any(
            self._accepts(p) for d in self._dirs for p, _ in walk_files(self.fs, d)
        ):
            raise NoInputsError(f"no images ({', '.join(sorted(self.extensions))}) under {self.root}")
        self.labelled = labels == "folders" or (labels == "auto" and not top_images)
        self.skipped: dict[str, int] = {}  # {reason: count} of files not listed, known once listed
        self._classes: dict[str, int] = {}
        self._listing: Listing | None = None

    def _accepts(self, path: str) -> bool:
        return Path(path).suffix.lower() in self.extensions

    def partitions(self) -> list[tuple[str, Any]]:
        """("folder", path) per top-level folder, ("files", [(path, info), ...]) per run of
        top-level files, in listing order (a folder sorts as its name + "/", as its paths do)."""
        entries = [(p, "files", (p, info)) for p, info in self._files] + [
            (d + "/", "folder", d) for d in self._dirs
        ]
        parts: list[tuple[str, Any]] = []
        for _, kind, value in sorted(entries, key=lambda e: e[0]):
            if kind == "files" and parts and parts[-1][0] == "files":
                parts[-1][1].append(value)
            else:
                parts.append((kind, [value] if kind == "files" else value))
        return parts

    def list_partition(self, kind: str, value: Any) -> tuple[pa.Table, dict[str, int]]:
        """One partition's images as columns (class names in `class`, labels filled in later), and
        its skipped files by reason."""
        skipped: dict[str, int] = {}
        found = value if kind == "files" else walk_files(self.fs, value, skipped)
        base = len(self.path.rstrip("/")) + 1
        rows = []
        for path, info in sorted(found, key=lambda f: f[0]):
            if not self._accepts(path):  # counted in the manifest and the summary, never silently
                skip(skipped, extension_reason(path))
                continue
            rel = path[base:]
            cls = _class_of(rel) if self.labelled else None
            meta = {"path": rel} | ({"class": cls} if cls is not None else {})
            key = safe_key(str(Path(rel).with_suffix("")))  # x.jpg and x.png: merge_partitions hashes
            rows.append(
                (
                    key,
                    rel,
                    self.fs.unstrip_protocol(path),
                    fingerprint_from_info(info),
                    json.dumps(meta, sort_keys=True),
                    cls,
                )
            )
        names = ("key", "id", "uri", "fingerprint", "meta", "class")
        columns = dict(zip(names, (list(c) for c in zip(*rows, strict=True)), strict=True)) if rows else {}
        table = pa.table({n: pa.array(columns.get(n, []), pa.string()) for n in names})
        return table, skipped

    def listing(self, limit: int | None = None, map_fn: MapFn | None = None) -> Listing:
        if self._listing is None:
            parts = self.partitions()
            results = (map_fn or serial_map)(self.list_partition, parts)
            skipped = dict(self._top_skipped)
            for _, part_skipped in results:
                for reason, n in part_skipped.items():
                    skip(skipped, reason, n)
            self.skipped = dict(sorted(skipped.items()))
            table = merge_partitions([t for t, _ in results])
            classes = table.column("class")
            if self.labelled:
                names = sorted(c for c in pc.unique(classes).to_pylist() if c is not None)
                self._classes = {c: i for i, c in enumerate(names)}
                labels = pc.index_in(classes, value_set=pa.array(names, pa.string())).cast(pa.int64())
            else:
                labels = pa.nulls(len(table), pa.int64())
            self._listing = Listing(
                table.drop_columns(["class"]).append_column("label", labels).select(SCHEMA.names)
            )
        return self._listing.limit(limit) if limit is not None else self._listing

    def list_items(self) -> list[SourceItem]:
        return self.listing().items()

    def __getstate__(self) -> dict[str, Any]:
        """Workers only read items by URI: don't ship the listing to every task."""
        return self.__dict__ | {"_files": [], "_listing": None}

    def read_bytes(self, item: SourceItem) -> bytes:
        with fsspec.open(item.uri, "rb", **self.storage_options) as f:
            return f.read()

    def label_map(self) -> dict[str, int]:
        return dict(self._classes)

    def describe(self) -> dict[str, Any]:
        out = {"kind": self.registry_name, "root": self.root, "labelled": self.labelled}
        return out | ({"skipped": dict(sorted(self.skipped.items()))} if self.skipped else {})


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def top_entries(
    fs: fsspec.AbstractFileSystem, root: str
) -> tuple[list[tuple[str, dict[str, Any]]], list[str], dict[str, int]]:
    """The root's own entries: ([(file, info)], [folder], {reason: count} of entries that are
    neither). A file root is its only file. Local roots follow symbolic links as torchvision's
    ImageFolder does; a link that points nowhere or back up the tree is counted as skipped."""
    if not _is_local(fs):
        if fs.isfile(root):
            return [(root, fs.info(root))], [], {}
        entries = fs.ls(root, detail=True)
        files = [(e["name"], e) for e in entries if e.get("type") != "directory"]
        return files, [e["name"] for e in entries if e.get("type") == "directory"], {}
    if os.path.isfile(root):
        st = os.stat(root)
        return [(root, {"size": st.st_size, "mtime": st.st_mtime})], [], {}
    files, dirs, skipped = [], [], {}
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if os.path.isdir(path):
            if _loops(root, path):
                skip(skipped, "link loop")
            else:
                dirs.append(path)
            continue
        try:
            st = os.stat(path)
        except OSError:
            skip(skipped, "broken link")
            continue
        files.append((path, {"size": st.st_size, "mtime": st.st_mtime}))
    return files, dirs, skipped


def walk_files(fs: fsspec.AbstractFileSystem, folder: str, skipped: dict[str, int] | None = None):
    """(path, info) of every file under a folder, lazily (local: following links, as top_entries;
    links that point nowhere or back up the tree are counted in `skipped`). Object stores: find."""
    skipped = {} if skipped is None else skipped
    if not _is_local(fs):
        yield from fs.find(folder, detail=True).items()
        return
    for here, dirs, names in os.walk(folder, followlinks=True):
        for d in list(dirs):
            if _loops(here, os.path.join(here, d)):
                dirs.remove(d)
                skip(skipped, "link loop")
        for name in names:
            path = os.path.join(here, name)
            try:
                st = os.stat(path)
            except OSError:
                skip(skipped, "broken link")
                continue
            yield path, {"size": st.st_size, "mtime": st.st_mtime}


def _loops(folder: str, child: str) -> bool:
    """A folder entry that is a link to the folder itself or one of its ancestors (a walk without end)."""
    here, real = os.path.realpath(folder), os.path.realpath(child)
    return here == real or here.startswith(real.rstrip("/") + "/")


def _class_of(relpath: str) -> str:
    """The class of an image: the name of its parent folder."""
    return relpath.rsplit("/", 2)[-2]
