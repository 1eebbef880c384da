"""Multi-band / multi-page TIFF rasters (remote sensing: Sentinel-2 / EuroSAT-MS band stacks, DEMs...).

One item per file; every band of the file is one channel (see pipeline/preprocess/raster.py for
how bands are found and scaled). Labels come from class folders as for image folders
(`<root>/<class>/<file>.tif`, e.g. EuroSAT), when every file sits in one.

Auto-detection claims a folder only when its TIFFs are not plain pictures: the first one has a
band count other than 1/3/4 (or 4 without an alpha sample), several same-size pages or series, or
samples that are not 8-bit; plain 8-bit grey/RGB(A) TIFFs stay with the image-folder source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fsspec

from ..registry import register_source
from .base import NoInputsError, Source, SourceItem, find_relpaths, unique_keys

RASTER_EXTENSIONS = {".tif", ".tiff"}
DETECT_FILES = 64  # files looked at by detect(), at most


def _walk_files(fs, root: str, limit: int) -> list[str]:
    """Up to `limit` files under root, walking lazily (detection must not list a whole corpus)."""
    found: list[str] = []
    for dirpath, _, files in fs.walk(root):
        found.extend(f"{dirpath.rstrip('/')}/{f}" for f in sorted(files))
        if len(found) >= limit:
            break
    return found[:limit]


def is_plain_picture(fileobj) -> bool:
    """True for a TIFF that the image branch decodes as a picture (8-bit grey, RGB, RGBA)."""
    import tifffile

    with tifffile.TiffFile(fileobj) as tif:
        page = tif.pages[0]
        same_size = [s for s in tif.series if s.shape == tif.series[0].shape]
        if len(same_size) > 1 or len(tif.series[0].shape) > 3 or page.dtype != "uint8":
            return False
        if tif.series[0].axes not in ("YX", "YXS", "SYX"):
            return False  # pages stacked into one series: bands, not a picture
        samples, extra = page.samplesperpixel, tuple(page.extrasamples or ())
        return samples in (1, 3) or (samples == 4 and any(e in (1, 2) for e in extra))


@register_source("raster")
class RasterSource(Source):
    """Every .tif/.tiff under `root` (or one file), sorted by relative path."""

    modality = "raster"

    def __init__(self, root: str, labels: str = "auto"):
        self.root = str(root)
        self._listing: list[str] | None = None
        self.skipped: dict[str, int] = {}  # files under root that are not rasters, by reason
        relpaths = self._relpaths()
        if not relpaths:
            raise NoInputsError(f"no rasters ({', '.join(sorted(RASTER_EXTENSIONS))}) under {self.root}")
        nested = all("/" in r for r in relpaths)
        self.labelled = labels == "folders" or (labels == "auto" and nested)
        self.classes = sorted({r.split("/", 1)[0] for r in relpaths}) if self.labelled else []

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_listing": None}  # workers need no listing

    @staticmethod
    def detect(path: str) -> bool:
        fs, p = fsspec.core.url_to_fs(path)
        if fs.isfile(p):
            files = [p]
        elif fs.isdir(p):
            files = _walk_files(fs, p, DETECT_FILES)
        else:
            return False
        images = [f for f in files if Path(f).suffix.lower() in _picture_like()]
        tiffs = [f for f in images if Path(f).suffix.lower() in RASTER_EXTENSIONS]
        if not tiffs or len(tiffs) != len(images):
            return False
        try:
            with fs.open(tiffs[0], "rb") as f:
                return not is_plain_picture(f)
        except Exception:  # noqa: BLE001 - no tifffile, or not a TIFF: not ours to claim
            return False

    def _relpaths(self) -> list[str]:
        """Relative paths of the rasters ('' for a single-file input), cached on the driver."""
        if self._listing is None:  # other files: counted by reason in self.skipped
            self._listing, self.skipped = find_relpaths(self.root, RASTER_EXTENSIONS)
        return self._listing

    def list_items(self) -> list[SourceItem]:
        relpaths = self._relpaths()
        fs, p = fsspec.core.url_to_fs(self.root)
        single = fs.isfile(p)
        index = {c: i for i, c in enumerate(self.classes)}
        keys = unique_keys([str(Path(r).with_suffix("")) for r in relpaths])
        items = []
        for key, rel in zip(keys, relpaths, strict=True):
            cls = rel.split("/", 1)[0] if self.labelled else None
            meta = {"path": rel} | ({"class": cls} if cls is not None else {})
            label = index[cls] if cls is not None else None
            url = fs.unstrip_protocol(p if single else f"{p.rstrip('/')}/{rel}")
            items.append(SourceItem(key=key, uri=url, label=label, meta=meta))
        return items

    def read_bytes(self, item: SourceItem) -> bytes:
        with fsspec.open(item.uri, "rb") as f:
            return f.read()

    def label_map(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    def describe(self) -> dict[str, Any]:
        out = {"kind": self.registry_name, "root": self.root, "labelled": self.labelled}
        return out | ({"skipped": dict(sorted(self.skipped.items()))} if self.skipped else {})


def _picture_like() -> set[str]:
    from .image_folder import IMAGE_EXTENSIONS

    return IMAGE_EXTENSIONS | RASTER_EXTENSIONS
