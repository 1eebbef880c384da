"""Image folders, including the ImageNet layout (`<root>/<wnid>/<file>.JPEG`, labels from folders)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fsspec

from ..registry import register_source
from .base import Source, SourceItem, fingerprint_from_info, unique_keys

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm"}


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
        self.extensions = {e.lower() for e in (extensions or IMAGE_EXTENSIONS)}
        found = self.fs.find(self.path, detail=True)  # the details give fingerprints for free
        files = sorted(p for p in found if Path(p).suffix.lower() in self.extensions)
        self._fingerprints = [fingerprint_from_info(found[p]) for p in files]
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(sorted(self.extensions))}) under {self.root}")
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
        return {"kind": self.registry_name, "root": self.root, "labelled": self.labelled}


def _class_of(relpath: str) -> str:
    """The class of an image: the name of its parent folder."""
    return relpath.rsplit("/", 2)[-2]
