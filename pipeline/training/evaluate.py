"""Rate-distortion evaluation on held-out data: our codecs against JPEG, WebP (Pillow) and Vorbis.

Rates count every byte a decoder needs: for our codecs the output of `codec.to_bytes` (header
included), for JPEG/WebP/Vorbis the whole file. Reconstructions are rounded to 8-bit pixels before
measuring, as the image formats' are. The held-out files come from the codec's own metadata (the
split it was trained with), so no evaluated file was seen in training.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pipeline.codec import WaLLoC

from ..metrics import ms_ssim, psnr, si_sdr, snr, ssim
from . import codec_data as D

EVAL_SIDE = 512  # images: centre crops of up to 512 x 512 (after the loader's downscale to 1024)


@dataclass
class Point:
    """One operating point, averaged over the evaluation set (PSNR/SSIM: mean of per-item values)."""

    method: str  # "ours: rgb-16x (zstd)", "JPEG", ...
    setting: str  # quality, latent coder, ...
    rate: float  # bits per pixel (images) or bits per sample per channel (audio)
    psnr: float  # dB (audio: PSNR for peak-to-peak 1, the codec's training metric)
    ssim: float | None = None  # images
    ms_ssim: float | None = None  # images (None where one is smaller than its 5 scales need)
    snr: float | None = None  # audio, dB
    si_sdr: float | None = None  # audio, dB
    kbps: float | None = None  # audio
    extra: dict = field(default_factory=dict)


# --- held-out data ------------------------------------------------------------------------------
def heldout_paths(codec: WaLLoC, missing_ok: bool = False) -> list[Path]:
    """The validation files recorded in the codec's metadata, checked against their sha256;
    `missing_ok`: skip the files that are not there (a partial data/), instead of raising."""
    return heldout_files(codec.metadata, codec.name, missing_ok)


def heldout_files(metadata: dict, name: str | None, missing_ok: bool = False) -> list[Path]:
    """heldout_paths from a codec's metadata alone (its .json: no weights needed), so that a job can
    check the files are there before it starts."""
    split = metadata.get("training", {}).get("data")
    if not split:
        raise ValueError(f"codec {name} records no training split; cannot pick held-out files")
    roots = [Path(r) for r in split["roots"]]
    out = []
    for entry in split["valid"]["files"]:
        path = next((r / entry["name"] for r in roots if (r / entry["name"]).exists()), None)
        if (path is None or path.is_dir()) and missing_ok:
            continue
        if path is None or path.is_dir():
            raise FileNotFoundError(f"held-out file {entry['name']} not found under {split['roots']}")
        if D.file_sha256(path) != entry["sha256"][0]:
            raise ValueError(f"{path} differs from the file the codec was validated on")
        out.append(path)
    return out


def eval_image(path: Path, side: int = EVAL_SIDE) -> np.ndarray:
    """uint8 (h, w, 3): the centre crop of up to side x side, both sides multiples of 8."""
    rgb = D.load_image(path)
    h, w = (min(side, s) // 8 * 8 for s in rgb.shape[:2])
    top, left = (rgb.shape[0] - h) // 2, (rgb.shape[1] - w) // 2
    return rgb[top : top + h, left : left + w]


def _unit(rgb: np.ndarray) -> Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).double() / 255


def _image_scores(rgb: np.ndarray, rec: np.ndarray) -> tuple[float, float, float]:
    """PSNR, SSIM, MS-SSIM (NaN for an image too small for 5 scales)."""
    a, b = _unit(rgb), _unit(rec)
    try:
        multi = ms_ssim(a, b)
    except ValueError:
        multi = float("nan")
    return psnr(a, b), ssim(a, b), multi


def _mean_scores(scores: list[tuple[float, float, float]]) -> tuple[float, float, float | None]:
    mean_psnr, mean_ssim, mean_ms = (float(np.mean(v)) for v in zip(*scores, strict=True))
    return mean_psnr, mean_ssim, None if np.isnan(mean_ms) else mean_ms


# --- images -------------------------------------------------------------------------------------
def latent_bytes(codec: WaLLoC, z: Tensor, method: str, size: tuple[int, ...]) -> int:
    """Size of the entropy-coded latents (pipeline.codec.entropy; zstd of the planes if absent)."""
    try:
        return len(codec.to_bytes(z, method=method, size=size))
    except ImportError:
        import zstandard

        return len(zstandard.ZstdCompressor(level=19).compress(z.to(torch.int8).numpy().tobytes()))


@torch.no_grad()
def codec_on_images(
    codec: WaLLoC,
    images: Sequence[np.ndarray],
    label: str,
    methods: Sequence[str] = ("zstd", "webp", "context"),
) -> tuple[list[Point], list[np.ndarray]]:
    """One point per latent coder, and the reconstructions (uint8)."""
    bits = {m: [] for m in methods}
    scores, recs = [], []
    for rgb in images:
        x = D.to_signal(rgb).unsqueeze(0)
        z = codec.encode(x)
        rec = codec.decode(z, size=tuple(x.shape[-2:]))[0]
        rec = ((rec + 0.5) * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
        recs.append(rec)
        scores.append(_image_scores(rgb, rec))
        for m in methods:
            bits[m].append(8 * latent_bytes(codec, z, m, tuple(x.shape[-2:])) / (rgb.shape[0] * rgb.shape[1]))
    reduction = (
        images[0].size
        / codec.latent_shape((3, *images[0].shape[:2]))[0]
        / np.prod(codec.latent_shape((3, *images[0].shape[:2]))[1:])
    )
    mean_psnr, mean_ssim, mean_ms = _mean_scores(scores)
    points = [
        Point(
            label,
            f"latents: {m}",
            float(np.mean(bits[m])),
            mean_psnr,
            mean_ssim,
            mean_ms,
            extra={"dimensionality_reduction": float(reduction)},
        )  # fmt: skip
        for m in methods
    ]
    return points, recs


def pil_on_images(images: Sequence[np.ndarray], fmt: str, quality: int) -> tuple[Point, list[np.ndarray]]:
    """JPEG (4:2:0, Pillow's default) or lossy WebP at one quality."""
    bpp, scores, recs = [], [], []
    for rgb in images:
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format=fmt, quality=quality)
        bpp.append(8 * buf.tell() / (rgb.shape[0] * rgb.shape[1]))
        buf.seek(0)
        rec = np.array(Image.open(buf).convert("RGB"))  # writable, for torch.from_numpy
        recs.append(rec)
        scores.append(_image_scores(rgb, rec))
    mean_psnr, mean_ssim, mean_ms = _mean_scores(scores)
    return Point(fmt, f"quality {quality}", float(np.mean(bpp)), mean_psnr, mean_ssim, mean_ms), recs


def interpolate_psnr(curve: Sequence[Point], rate: float) -> float | None:
    """PSNR of a baseline curve at `rate` (linear in bpp); None outside its range."""
    pts = sorted(curve, key=lambda p: p.rate)
    rates = [p.rate for p in pts]
    if not rates or rate < rates[0] or rate > rates[-1]:
        return None
    return float(np.interp(rate, rates, [p.psnr for p in pts]))


# --- audio --------------------------------------------------------------------------------------
def eval_clips(paths: Sequence[Path], length: int) -> Tensor:
    """Centre windows of the held-out audio files, normalised as in training: (B, 2, length)."""
    return D.audio_eval_batch([D.Item(p.parent, (p,)) for p in paths], length)


def _audio_point(
    method: str, setting: str, x: Tensor, recs: Sequence[Tensor], bits: Sequence[int], rate: int
):
    samples = x.shape[-1]
    return Point(
        method,
        setting,
        rate=float(np.mean([b / (x.shape[1] * samples) for b in bits])),
        psnr=float(np.mean([psnr(a, b) for a, b in zip(x, recs, strict=True)])),
        snr=float(np.mean([snr(a, b) for a, b in zip(x, recs, strict=True)])),
        si_sdr=float(np.mean([si_sdr(a, b, per_channel=True) for a, b in zip(x, recs, strict=True)])),
        kbps=float(np.mean([b / (samples / rate) / 1000 for b in bits])),
    )


@torch.no_grad()
def codec_on_audio(codec: WaLLoC, x: Tensor, label: str, rate: int = 44100) -> Point:
    recs, bits = [], []
    for clip in x:
        z = codec.encode(clip.unsqueeze(0))
        recs.append(codec.decode(z, size=(clip.shape[-1],))[0])
        bits.append(8 * latent_bytes(codec, z, "zstd", (clip.shape[-1],)))
    point = _audio_point(label, "latents: zstd", x, recs, bits, rate)
    point.extra["dimensionality_reduction"] = x[0].numel() / np.prod(codec.latent_shape(tuple(x[0].shape)))
    return point


def vorbis_on_audio(x: Tensor, level: float, rate: int = 44100) -> Point | None:
    """Ogg Vorbis through libsndfile at a compression level (0 best .. 1 smallest); None if missing."""
    try:
        import soundfile as sf
    except ImportError:
        return None
    recs, bits = [], []
    for clip in x:
        buf = io.BytesIO()
        sf.write(buf, clip.T.numpy(), rate, format="OGG", subtype="VORBIS", compression_level=level)
        bits.append(8 * buf.tell())
        buf.seek(0)
        rec, _ = sf.read(buf, dtype="float32", always_2d=True)
        rec = torch.from_numpy(rec.T.copy())[:, : clip.shape[-1]]
        recs.append(torch.nn.functional.pad(rec, (0, clip.shape[-1] - rec.shape[-1])))
    return _audio_point("Vorbis", f"compression level {level:g}", x, recs, bits, rate)
