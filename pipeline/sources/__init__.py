"""Input sources: each module registers one kind; `open_source` picks one by name or by looking."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import fsspec

from ..registry import SOURCES, lookup
from . import audio, hf, image_folder, input_manifest, raster, tar_shards  # noqa: F401  (each registers its kinds)
from .base import Source, SourceItem, UnsafeKeyError, check_keys, listing_hash, safe_key

__all__ = [
    "Source",
    "SourceItem",
    "UnsafeKeyError",
    "check_keys",
    "detect_source",
    "listing_hash",
    "open_source",
    "safe_key",
]


def detect_source(path: str) -> str:
    """Guess the source kind from what the input holds (sources may add detectors)."""
    for name in sorted(SOURCES, key=lambda n: (SOURCES[n].detect_priority, n)):
        detect = getattr(SOURCES[name], "detect", None)
        if detect is not None and name != "image-folder" and detect(path):
            return name
    fs, p = fsspec.core.url_to_fs(path)
    if not fs.exists(p):
        raise FileNotFoundError(f"input {path} does not exist")
    return "image-folder"


def open_source(
    path: str, kind: str = "auto", policies: Mapping[str, Any] | None = None, **options: Any
) -> Source:
    """The source for `path`. `policies`: the run's settings by modality (EncodeConfig.policies());
    a kind that needs run settings takes them from its own modality's (audio: window, hop, sample
    rate), and sees no other; explicit options win."""
    name = detect_source(path) if kind == "auto" else kind
    cls = lookup(SOURCES, name, "source")
    if policies is not None and cls.modality in policies:
        options = cls.options_from_policy(policies[cls.modality]) | options
    return cls(path, **options)
