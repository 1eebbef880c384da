"""Data for the learning jobs: latents from the pipeline's shards, pixels from the usual pipeline.

Latents come from a pipeline output root (WebDataset shards), read with pipeline.loaders; a job
given images runs the encode pipeline itself (local Ray) into its output folder first. Pixels are
decoded with the pipeline's own image rule (EXIF, mode, resize shorter side + centre crop) at the
baseline's size, so both arms see the same crop of every image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..config import DEFAULT_IMAGE_CODEC, EncodeConfig, ImageSettings
from ..loaders import LatentWebDataset, RunInfo
from ..preprocess.image import ImagePolicy, decode_image
from ..sinks import SinkSpec

LATENT_SIDE, PIXEL_SIDE, IMAGE_SIDE = 32, 64, 256  # 12x32x32 latents = 3x64x64 pixels = 12,288 values


def encode_folder(
    images: str | Path,
    output: str | Path,
    codec: str = DEFAULT_IMAGE_CODEC,
    shard_size: int = 64,
    flip_pair: bool = False,
) -> str:
    """Run the encode pipeline (local Ray) over an image folder into `output`; resumes a finished run.
    flip_pair: also store each image's mirrored latent (exact flips for the loaders' flip="pair")."""
    from ..runtime import run_encode  # Ray is imported only when encoding

    cfg = EncodeConfig(
        input=str(images),
        sink=SinkSpec(output=str(output), shard_size=shard_size, flip_pair=flip_pair),
        codec=codec,
        image=ImageSettings(size=IMAGE_SIDE, crop="center"),
        mode="resume",
        progress=False,
    )
    summary = run_encode(cfg)
    if summary.failed_shards or summary.errors:
        raise RuntimeError(f"encoding {images} failed for some inputs:\n{summary.format()}")
    return str(output)


@dataclass
class LatentSet:
    """Every sample of a run, in key order: dequantized latents + what the pipeline recorded."""

    root: str
    z: Tensor  # (N, C, h, w) float32, dequantized
    keys: list[str]
    labels: Tensor  # (N,) long, -1 where unlabelled
    meta: list[dict[str, Any]] = field(default_factory=list)

    def index(self) -> dict[str, int]:
        return {k: i for i, k in enumerate(self.keys)}

    def select(self, rows: list[int]) -> LatentSet:
        idx = torch.as_tensor(rows, dtype=torch.long)
        return LatentSet(
            self.root,
            self.z[idx],
            [self.keys[i] for i in rows],
            self.labels[idx],
            [self.meta[i] for i in rows],
        )


def read_latents(root: str, progress: bool = False) -> LatentSet:
    """All samples of a WebDataset run (hash-checked shards), sorted by key for a stable order."""
    data = LatentWebDataset(root, output="float", with_meta=True, shuffle_shards=False)
    rows = sorted(
        ((b.key, b.latents, b.labels, b.meta) for b in tqdm(data, desc="latents", disable=not progress)),
        key=lambda r: r[0],
    )
    if not rows:
        raise ValueError(f"{root}: no samples")
    return LatentSet(
        root=root,
        z=torch.stack([r[1] for r in rows]).float(),
        keys=[r[0] for r in rows],
        labels=torch.tensor([r[2] for r in rows], dtype=torch.long),
        meta=[r[3] for r in rows],
    )


def source_path(meta: dict[str, Any]) -> Path:
    """The local file a sample came from (its metadata's `source` URI)."""
    uri = meta["source"]
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    if "://" in uri:
        raise ValueError(f"pixel baseline needs local files; sample source is {uri}")
    return Path(uri)


def image_channels(paths: list[Path], probe: int = 16) -> int:
    """1 when the first `probe` images are grey (a grey mode, or RGB with R = G = B: grey photos
    stored as colour), else 3: what picks the codec (pipeline.config.image_codec_for)."""
    from PIL import Image

    for p in paths[:probe]:
        with Image.open(p) as im:
            if im.mode in ("1", "L", "LA", "I", "I;16", "F"):
                continue
            rgb = np.asarray(im.convert("RGB").reduce(4) if min(im.size) >= 64 else im.convert("RGB"))
            if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])):
                return 3
    return 1 if paths else 3


def load_pixels(paths: list[Path], side: int, progress: bool = False, channels: int = 3) -> Tensor:
    """uint8 (N, channels, side, side): decode, shorter side to `side`, centre crop (the pipeline's
    rule; channels=1: grey, as the pipeline converts for a 1-channel codec)."""
    policy = ImagePolicy(size=side, crop="center", channels=channels)
    out = np.empty((len(paths), channels, side, side), dtype=np.uint8)
    for i, p in enumerate(tqdm(paths, desc=f"pixels {side}", disable=not progress)):
        out[i] = decode_image(Path(p).read_bytes(), policy).array
    return torch.from_numpy(out)


def to_model_pixels(x: Tensor) -> Tensor:
    """uint8 -> float in [-0.5, 0.5] (the codec's input range, used for the pixel arm too)."""
    return x.float() / 255.0 - 0.5


def split_of(meta: dict[str, Any]) -> str:
    """'train' or 'val' from the sample's relative path (first folder), else 'train'."""
    first = Path(meta.get("path", "")).parts[:1]
    return first[0] if first and first[0] in ("train", "val") else "train"


def run_info(root: str) -> RunInfo:
    return RunInfo.open(root)


@dataclass(frozen=True)
class Standardizer:
    """Per-channel mean/std of the training latents: dequantized channels range from std ~4 to ~100."""

    mean: Tensor  # (C, 1, 1)
    std: Tensor

    @classmethod
    def fit(cls, z: Tensor) -> Standardizer:
        return cls(
            z.mean(dim=(0, 2, 3), keepdim=True)[0], z.std(dim=(0, 2, 3), keepdim=True)[0].clamp_min(1e-3)
        )

    @classmethod
    def from_run(cls, root: str) -> Standardizer:
        """The run manifest's per-channel statistics of the dequantized latents (docs/statistics.md):
        computed by the pipeline over every latent of the run, exactly, without reading a shard."""
        from ..loaders.common import channel_stats

        mean, std = channel_stats([run_info(root)], "float")
        return cls(mean[:, None, None], std[:, None, None].clamp_min(1e-3))

    def __call__(self, z: Tensor) -> Tensor:
        return (z - self.mean) / self.std

    def inverse(self, z: Tensor) -> Tensor:
        return z * self.std + self.mean


def image_files(folder: str | Path) -> list[Path]:
    """Image files under a local folder, sorted (the listing order every job uses), with the
    extensions the image-folder source takes."""
    from ..sources.image_folder import IMAGE_EXTENSIONS

    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
