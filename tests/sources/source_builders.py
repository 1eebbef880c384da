"""Small real inputs for every source kind, written into tmp_path by the tests themselves.

`SOURCE_CASES` maps each registered source name to a builder returning (input path, options):
the shared contract test runs over all of them, and fails for a registered source without one.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline.config import DEFAULT_IMAGE_INPUT

AUDIO_OPTIONS = {"window": 2048, "sample_rate": 16000}  # small windows: fast listings and reads


def image_bytes(seed: int, fmt: str = "PNG", size: tuple[int, int] = (12, 10)) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue()


def add_member(tar: tarfile.TarFile, name: str, data: bytes = b"", **fields: Any) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data) if fields.get("type", tarfile.REGTYPE) == tarfile.REGTYPE else 0
    for k, v in fields.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data) if info.size else None)


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            add_member(tar, name, data)
    return path


def wds_shards(root: Path) -> tuple[str, dict[str, Any]]:
    """Two shards in the imagenet-1k-wds shape: <key>.jpg + <key>.cls (+ one .json label)."""
    shards = root / "shards"
    write_tar(
        shards / "train-000000.tar",
        [
            ("n01_0001.jpg", image_bytes(1, "JPEG")),
            ("n01_0001.cls", b"3\n"),
            ("n01_0002.png", image_bytes(2)),
            ("n01_0002.cls", b"7"),
        ],
    )
    write_tar(
        shards / "train-000001.tar",
        [
            ("sub/n02_0001.webp", image_bytes(3, "WEBP")),
            ("sub/n02_0001.json", b'{"label": 5, "filename": "x.JPEG"}'),
            ("n02_0002.jpeg", image_bytes(4, "JPEG")),
        ],
    )
    return str(shards), {}


def hf_disk(root: Path) -> tuple[str, dict[str, Any]]:
    """A save_to_disk Dataset with an Image and a ClassLabel column."""
    from datasets import ClassLabel, Dataset
    from datasets import Image as ImageFeature

    ds = Dataset.from_dict(
        {"image": [{"bytes": image_bytes(i), "path": None} for i in range(5)], "label": [0, 1, 2, 1, 0]}
    )
    ds = ds.cast_column("image", ImageFeature()).cast_column("label", ClassLabel(names=["ant", "bee", "cat"]))
    path = root / "hf_disk"
    ds.save_to_disk(str(path))
    return str(path), {}


def raster_tree(root: Path) -> tuple[str, dict[str, Any]]:
    """5-band uint16 TIFFs in two class folders (EuroSAT-like), one written page by page."""
    import tifffile

    rng = np.random.default_rng(0)
    base = root / "rasters"
    for cls, n in (("forest", 2), ("river", 1)):
        (base / cls).mkdir(parents=True)
        for i in range(n):
            bands = rng.integers(0, 65536, (5, 16, 20), dtype=np.uint16)
            tifffile.imwrite(base / cls / f"tile_{i}.tif", bands, photometric="minisblack")
    with tifffile.TiffWriter(base / "river" / "pages.tiff") as tif:
        for band in rng.integers(0, 65536, (5, 16, 20), dtype=np.uint16):
            tif.write(band, photometric="minisblack")
    return str(base), {}


def write_wav(
    path: Path, seconds: float, rate: int, channels: int, subtype: str = "PCM_16", seed: int = 0
) -> Path:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)[:, None] + 0.05 * rng.standard_normal((n, channels))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(tone, -1, 1), rate, subtype=subtype)
    return path


def audio_tree(root: Path) -> tuple[str, dict[str, Any]]:
    """WAV and FLAC files at odd rates, mono and stereo."""
    base = root / "audio"
    write_wav(base / "a.wav", 0.30, 16000, 2)
    write_wav(base / "b.flac", 0.25, 22050, 1, "PCM_24")
    write_wav(base / "deep" / "c.wav", 0.10, 11025, 2, "FLOAT")
    return str(base), dict(AUDIO_OPTIONS)


def musdb_tree(root: Path) -> tuple[str, dict[str, Any]]:
    """<root>/<split>/<track>/{mixture,drums,bass,other,vocals}.wav, two tracks in two splits."""
    base = root / "musdb"
    for split, track in (("train", "A Band - Song"), ("test", "Other's Tune")):
        for i, stem in enumerate(("mixture", "drums", "bass", "other", "vocals")):
            write_wav(base / split / track / f"{stem}.wav", 0.3, 22050, 2, seed=i)
    return str(base), dict(AUDIO_OPTIONS)


def image_folder(root: Path) -> tuple[str, dict[str, Any]]:
    return DEFAULT_IMAGE_INPUT, {}


def input_manifest(root: Path) -> tuple[str, dict[str, Any]]:
    """A parquet manifest naming the bundled photos: relative and absolute paths, class-name labels."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir(parents=True, exist_ok=True)
    files = sorted(Path(DEFAULT_IMAGE_INPUT).rglob("*.JPEG"))
    paths = [os.path.relpath(f, root) if i % 2 else str(f) for i, f in enumerate(files)]
    pq.write_table(
        pa.table({"path": paths, "label": [f.parent.name for f in files]}), root / "inputs.parquet"
    )
    return str(root / "inputs.parquet"), {}


SOURCE_CASES: dict[str, Callable[[Path], tuple[str, dict[str, Any]]]] = {
    "audio-folder": audio_tree,
    "hf": hf_disk,
    "image-folder": image_folder,
    "manifest": input_manifest,
    "musdb": musdb_tree,
    "raster": raster_tree,
    "wds-tars": wds_shards,
}
