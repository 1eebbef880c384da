"""Input sources: each module registers one kind; `open_source` picks one by name or by looking."""

from __future__ import annotations

from typing import Any

import fsspec

from ..registry import SOURCES, lookup
from . import image_folder  # noqa: F401  (registers)
from .base import Source, SourceItem, listing_hash, safe_key

__all__ = ["Source", "SourceItem", "listing_hash", "open_source", "detect_source", "safe_key"]


def detect_source(path: str) -> str:
    """Guess the source kind from what the input holds (sources may add detectors)."""
    for name in sorted(SOURCES):
        detect = getattr(SOURCES[name], "detect", None)
        if detect is not None and name != "image-folder" and detect(path):
            return name
    fs, p = fsspec.core.url_to_fs(path)
    if not fs.exists(p):
        raise FileNotFoundError(f"input {path} does not exist")
    return "image-folder"


def open_source(path: str, kind: str = "auto", **options: Any) -> Source:
    name = detect_source(path) if kind == "auto" else kind
    return lookup(SOURCES, name, "source")(path, **options)
