"""Image folders, including the ImageNet layout (`<root>/<wnid>/<file>.JPEG`, labels from folders)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import fsspec

from ..registry import register_source
from .base import NoInputsError, Source, SourceItem, fingerprint_from_info, unique_keys

# torchvision's ImageFolder (IMG_EXTENSIONS: .jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp) and GIF
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}


@register_source("image-folder")
class ImageFolderSource(Source):
    """Every image file under `root`, sorted by relative path.

    With `labels="folders"` (the default when every image sits in a sub-folder) the image's parent
    folder is its class, as in ImageNet's `train/<wnid>/<file>.JPEG` (whether the root is the
    dataset or its split folder); classes are indexed in sorted order.
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
        found, self.skipped = scan_files(self.fs, self.path)  # the details give fingerprints for free
        files = []
        for p in sorted(found):
            suffix = Path(p).suffix.lower()
            if suffix in self.extensions:
                files.append(p)
            else:  # counted in the manifest (source.skipped) and the run's summary, never silently
                reason = f"extension {suffix}" if suffix else "no extension"
                self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self._fingerprints = [fingerprint_from_info(found[p]) for p in files]
        if not files:
            raise NoInputsError(f"no images ({', '.join(sorted(self.extensions))}) under {self.root}")
        self._relpaths = [p[len(self.path.rstrip("/")) + 1 :] for p in files]
        self._files = files
        nested = all("/" in r for r in self._relpaths)
        self.labelled = labels == "folders" or (labels == "auto" and nested)
        classes = sorted({_class_of(r) for r in self._relpaths}) if self.labelled else []
        self._classes = {c: i for i, c in enumerate(classes)}

    def list_items(self) -> list[SourceItem]:
        # keys drop the extension; files that differ only in it (x.jpg, x.png) hash their full paths
        keys = unique_keys([str(Path(r).with_suffix("")) for r in self._relpaths], ids=self._relpaths)
        items = []
        for key, rel, full, fp in zip(keys, self._relpaths, self._files, self._fingerprints, strict=True):
            cls = _class_of(rel) if self.labelled else None
            label = self._classes[cls] if cls is not None else None
            meta = {"path": rel} | ({"class": cls} if cls is not None else {})
            uri = self.fs.unstrip_protocol(full)
            items.append(SourceItem(key=key, uri=uri, label=label, meta=meta, fingerprint=fp))
        return items

    def __getstate__(self) -> dict[str, Any]:
        """Workers only read items by URI: don't ship the listing to every task."""
        state = dict(self.__dict__)
        state["_files"], state["_relpaths"], state["_fingerprints"] = [], [], []
        return state

    def read_bytes(self, item: SourceItem) -> bytes:
        with fsspec.open(item.uri, "rb", **self.storage_options) as f:
            return f.read()

    def label_map(self) -> dict[str, int]:
        return dict(self._classes)

    def describe(self) -> dict[str, Any]:
        out = {"kind": self.registry_name, "root": self.root, "labelled": self.labelled}
        return out | ({"skipped": dict(sorted(self.skipped.items()))} if self.skipped else {})


def scan_files(fs: fsspec.AbstractFileSystem, root: str) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """(path -> info of every file under root, {reason: count} of entries that are not files).

    Local folders are walked following symbolic links, as torchvision's ImageFolder does (fsspec's
    find lists a linked folder as one entry); a link that points nowhere or back up the tree is
    counted as skipped. Other filesystems: fsspec's find with details."""
    if "file" not in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        return fs.find(root, detail=True), {}
    found: dict[str, dict[str, Any]] = {}
    skipped: dict[str, int] = {}
    if os.path.isfile(root):
        st = os.stat(root)
        return {root: {"size": st.st_size, "mtime": st.st_mtime}}, {}
    for folder, dirs, names in os.walk(root, followlinks=True):
        here = os.path.realpath(folder)
        for d in list(dirs):
            real = os.path.realpath(os.path.join(folder, d))
            if here == real or here.startswith(real.rstrip("/") + "/"):  # a link to an ancestor: no end
                dirs.remove(d)
                skipped["link loop"] = skipped.get("link loop", 0) + 1
        for name in names:
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
            except OSError:
                skipped["broken link"] = skipped.get("broken link", 0) + 1
                continue
            found[path] = {"size": st.st_size, "mtime": st.st_mtime}
    return found, skipped


def _class_of(relpath: str) -> str:
    """The class of an image: the name of its parent folder."""
    return relpath.rsplit("/", 2)[-2]
