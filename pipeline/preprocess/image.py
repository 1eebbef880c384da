"""Image decoding and the resize/crop policy: bytes in, uint8 (C, H, W) out. Pure functions, no I/O.

Channel rule (documented in the README): images are converted to the codec's channel count —
  3 channels: L/I;16/I/F -> grey replicated; P/PA/LA/RGBA -> composited over white (alpha is
              dropped by blending, not by truncation); CMYK/YCbCr/LAB -> RGB via Pillow.
  1 channel:  anything -> luminance 'L' (alpha composited over white first).
  4 channels: RGBA (missing alpha = opaque).
  16-bit and float modes are scaled to 8 bits by their value range ((v >> 8) for I;16).
Other channel counts are multi-band rasters: use the raster source.
EXIF orientation is applied. JPEGs are decoded in draft mode (DCT-domain downscaling) when the
target is at most half the size, which is both faster and what a resize would produce anyway.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from PIL import Image, ImageFile, ImageOps

from .errors import DecodeError
from .integrity import check_integrity, check_tiff_extents

__all__ = ["DecodeError", "Decoded", "ImagePolicy", "ImagePreprocessor", "decode_image"]

DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own bomb threshold x 2: refuse anything larger


@dataclass(frozen=True)
class ImagePolicy:
    """How images become codec input. Recorded in the manifest: latents depend on it."""

    size: int | None = 256  # target side (crop=center) or shorter side (crop=none); None keeps size
    crop: Literal["center", "none"] = "center"  # none: keep aspect, pad to a multiple of 2^J
    channels: int = 3  # the codec's channel count
    multiple: int = 8  # 2^J: crop=none pads to this (reflect, in the codec)
    resample: str = "bicubic"  # Pillow filter for resizing (antialiased)
    max_pixels: int = DEFAULT_MAX_PIXELS  # decompression-bomb cap
    draft: bool = True  # JPEG DCT-domain downscaling when shrinking >= 2x
    # aspect buckets (W, H), sides multiples of `multiple`: each image goes to the bucket nearest its
    # aspect ratio (cover, then center crop); replaces size/crop. None: one size for all (size/crop)
    buckets: tuple[tuple[int, int], ...] | None = None

    def __post_init__(self) -> None:
        for w, h in self.buckets or ():
            if w < 1 or h < 1 or w % self.multiple or h % self.multiple:
                raise ValueError(f"bucket {w}x{h}: sides must be positive multiples of 2^J = {self.multiple}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.buckets is None:
            del d["buckets"]  # unbucketed runs keep the settings (and settings hash) they always had
        else:
            d["buckets"] = [bucket_name(b) for b in self.buckets]
        return d


Bucket = tuple[int, int]  # (W, H) of the codec input


def bucket_name(bucket: Bucket) -> str:
    """'320x192': W x H, the name used in sample metadata, shard names and the manifest."""
    return f"{bucket[0]}x{bucket[1]}"


def parse_buckets(spec: str, multiple: int) -> tuple[Bucket, ...]:
    """`256x256,320x192,...` or `area=65536:ratios=1:1,4:3,3:4` -> sorted unique (W, H) buckets.

    The area form derives each bucket from its ratio: sides rounded to the nearest multiple of 2^J
    so that W*H is close to the area and W/H to the ratio (at least one block per side)."""
    spec = spec.strip()
    if spec.startswith("area="):
        area_part, sep, ratio_part = spec.partition(":ratios=")
        if not sep:
            raise ValueError(f"--buckets {spec!r}: expected area=<pixels>:ratios=<w:h>,<w:h>,...")
        area = float(area_part.removeprefix("area="))
        out = []
        for ratio in ratio_part.split(","):
            a, _, b = ratio.partition(":")
            r = float(a) / float(b)
            w, h = math.sqrt(area * r), math.sqrt(area / r)
            out.append(tuple(max(multiple, round(v / multiple) * multiple) for v in (w, h)))
    else:
        out = []
        for part in spec.split(","):
            w, sep, h = part.strip().lower().partition("x")
            if not sep:
                raise ValueError(f"--buckets: {part!r} is not WxH")
            out.append((int(w), int(h)))
    buckets = tuple(sorted(set(out)))
    if not buckets:
        raise ValueError("--buckets: no bucket given")
    for w, h in buckets:
        if w < 1 or h < 1 or w % multiple or h % multiple:
            raise ValueError(f"--buckets: {w}x{h} has a side that is not a multiple of 2^J = {multiple}")
    return buckets


def choose_bucket(width: int, height: int, buckets: tuple[Bucket, ...]) -> Bucket:
    """The bucket nearest the image's aspect ratio (in log ratio, so 2:1 and 1:2 are equally far).

    Ties (equal log distance, e.g. buckets of one ratio in two sizes) go to the bucket whose area is
    nearest the image's (least resampling), then to the smaller W, then H: deterministic."""
    log_ratio = math.log(width / height)
    log_area = math.log(width * height)

    def key(b: Bucket) -> tuple[float, float, int, int]:
        # rounded so that float noise cannot break a true tie (e.g. 4:3 vs 3:4 for a square image)
        d_ratio = round(abs(log_ratio - math.log(b[0] / b[1])), 9)
        return d_ratio, round(abs(log_area - math.log(b[0] * b[1])), 9), b[0], b[1]

    return min(buckets, key=key)


@dataclass
class Decoded:
    """A decoded sample: the codec-ready array (before float conversion) and what to record about it."""

    array: np.ndarray  # images: uint8 (C, H, W); audio: float32 (C, L) in [-0.5, 0.5]
    meta: dict[str, Any]  # images: original_size (W, H), mode, resized_size, crop_box


_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
    "nearest": Image.Resampling.NEAREST,
}


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite a mode with transparency over white, giving RGB."""
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer / float greyscale to 'L' by scaling its value range."""
    arr = np.asarray(img)
    if img.mode.startswith("I;16") or arr.dtype == np.uint16:
        return Image.fromarray((arr.astype(np.uint32) >> 8).astype(np.uint8), mode="L")
    arr = arr.astype(np.float64)
    lo, hi = (0.0, 1.0) if img.mode == "F" and arr.max() <= 1.0 else (float(arr.min()), float(arr.max()))
    scaled = np.clip((arr - lo) / max(hi - lo, 1e-12) * 255.0 + 0.5, 0, 255)
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def convert_mode(img: Image.Image, channels: int) -> Image.Image:
    """Apply the documented channel rule."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        img = _to_8bit(img)
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    )
    if channels == 3:
        return _flatten_alpha(img) if has_alpha else img.convert("RGB")
    if channels == 1:
        return (_flatten_alpha(img) if has_alpha else img).convert("L")
    if channels == 4:
        return img.convert("RGBA")
    raise DecodeError(f"images cannot feed a {channels}-channel codec; use the raster source for band data")


def _resize_plan(w: int, h: int, policy: ImagePolicy) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """(resized W, H) and the crop box (left, top, right, bottom) in resized coordinates."""
    if policy.buckets:
        bw, bh = choose_bucket(w, h, policy.buckets)
        scale = max(bw / w, bh / h)  # cover the bucket, then center-crop the overhang
        rw, rh = max(bw, round(w * scale)), max(bh, round(h * scale))
        left, top = (rw - bw) // 2, (rh - bh) // 2
        return (rw, rh), (left, top, left + bw, top + bh)
    if policy.size is None:
        return (w, h), (0, 0, w, h)
    scale = policy.size / min(w, h)
    rw, rh = max(1, round(w * scale)), max(1, round(h * scale))
    if policy.crop == "none":
        return (rw, rh), (0, 0, rw, rh)
    left, top = (rw - policy.size) // 2, (rh - policy.size) // 2
    return (rw, rh), (left, top, left + policy.size, top + policy.size)


def decode_image(data: bytes, policy: ImagePolicy) -> Decoded:
    """Decode, orient, convert and resize/crop one image. Raises DecodeError with a specific reason.

    Only a whole image becomes a sample (docs/guarantees.md, "Corrupt inputs"): a truncated or
    structurally damaged file (integrity.py), any Pillow error while reading the header, the EXIF
    metadata or the pixels, and any warning Pillow gives about the file's data on the way (corrupt
    EXIF, truncated reads, a malformed MPO or APNG) raise DecodeError; nothing is padded."""
    if not data:
        raise DecodeError("empty file (0 bytes)")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True in this process: Pillow would pad truncated "
            "images with grey; the pipeline decodes only with Pillow's default (False)"
        )
    fmt = "image"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # the policy's cap, checked below, decides: Pillow's warning (at half of its own error
        # threshold) would refuse images between 89 and 179 Mpixels that the default cap admits
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
            fmt = img.format or fmt
            w, h = img.size
            if w * h > policy.max_pixels:
                raise DecodeError(f"image is {w}x{h} = {w * h} pixels, over the cap of {policy.max_pixels}")
            check_integrity(data)  # after the cap: a bomb is refused as one, before a pass over it
            if fmt == "TIFF":
                check_tiff_extents(img.tag_v2, len(data))  # LZW decodes a cut strip without a word
            mode = img.mode
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)  # animated GIF/WebP/multi-page TIFF: the first frame
            _refuse_data_warnings(caught, f"{fmt} (its header or metadata)")
            if fmt != "JPEG":  # (JPEG: after draft, below) others may keep EXIF after the pixels, and
                img.load()  # Pillow loads them to read it; a failed load leaves a partial image that
                _refuse_data_warnings(caught, fmt)  # a second load() would return as if whole
            original = _oriented_size(img)
            _refuse_data_warnings(caught, f"{fmt} (its EXIF metadata)")
            (rw, rh), _ = _resize_plan(*original, policy)
            if policy.draft and img.format == "JPEG" and rw * 2 <= original[0]:
                request = (rw, rh) if original == (w, h) else (rh, rw)  # draft sees stored orientation
                img.draft(img.mode if img.mode in ("RGB", "L") else None, request)
            img.load()
            _refuse_data_warnings(caught, fmt)
            try:
                img = ImageOps.exif_transpose(img)
            except Exception as err:  # noqa: BLE001 - Pillow raises many types for broken metadata
                raise DecodeError(
                    f"corrupt or truncated {fmt} (applying its EXIF orientation): {type(err).__name__}: {err}"
                ) from err
            _refuse_data_warnings(caught, f"{fmt} (its EXIF metadata)")
        except DecodeError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise DecodeError(f"decompression bomb refused: {err}") from err
        except Image.UnidentifiedImageError:
            check_integrity(data)  # a truncated header of a format checked there: say so
            raise DecodeError(_unidentified(data)) from None
        except MemoryError as err:
            raise DecodeError(f"{fmt} too large to decode: {err}") from err
        except Exception as err:  # noqa: BLE001 - Pillow's plugins raise many types for damaged files
            check_integrity(data)  # the structural reason, where the format has one
            fmt = fmt if fmt != "image" else _format_of(data)
            raise DecodeError(f"corrupt or truncated {fmt}: {type(err).__name__}: {err}") from err
    img = convert_mode(img, policy.channels)
    (rw, rh), box = _resize_plan(*original, policy)
    if img.size != (rw, rh):
        img = img.resize((rw, rh), _RESAMPLE[policy.resample], reducing_gap=None)
    if box != (0, 0, rw, rh):
        img = img.crop(box)
    pixels = np.asarray(img, dtype=np.uint8)
    pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
    meta = {
        "original_size": list(original),
        "mode": mode,
        "resized_size": [rw, rh],
        "crop_box": list(box),
    }
    if policy.buckets:
        meta["bucket"] = bucket_name((box[2] - box[0], box[3] - box[1]))
    return Decoded(array=np.ascontiguousarray(pixels.transpose(2, 0, 1)), meta=meta)


# Pillow warnings that say nothing about the file's data being damaged: kept, not refused
BENIGN_WARNINGS = (
    "Metadata Warning",  # a TIFF/EXIF tag with more entries than the spec says: its first is used
    "XMP data cannot be read",  # defusedxml absent: XMP orientation is not read (EXIF's still is)
)


def _refuse_data_warnings(caught: list[warnings.WarningMessage], fmt: str) -> None:
    """A warning from Pillow while reading the file (corrupt EXIF, a truncated read, a malformed
    MPO/APNG) means the decode went on past damage: refuse the image instead of keeping it.

    Only warnings raised in Pillow's own modules count: warnings.catch_warnings is process-wide, so
    a warning from another thread (a source's read) may land in `caught` too. The capture assumes
    one decoding thread per process, as the runtime's decode stage has."""
    for w in caught:
        if issubclass(w.category, (DeprecationWarning, Image.DecompressionBombWarning)):
            continue
        if "PIL" not in Path(w.filename).parts:
            continue
        text = str(w.message)
        if not text.startswith(BENIGN_WARNINGS):
            raise DecodeError(f"corrupt {fmt}: {text}")


_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG", "PNG"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"RIFF", "WebP/RIFF"),
)


def _format_of(data: bytes) -> str:
    """The format a file's signature names ("image" if none is known here)."""
    return next((name for magic, name in _SIGNATURES if data.startswith(magic)), "image")


def _unidentified(data: bytes) -> str:
    """The reason for a file no Pillow plugin opens: a damaged header of a known format, or none."""
    fmt = _format_of(data)
    if fmt != "image":
        return f"corrupt or truncated {fmt}: its header is unreadable (Pillow cannot open it)"
    return "not a recognised image format"


def _oriented_size(img: Image.Image) -> tuple[int, int]:
    """Image size after EXIF rotation (a JPEG's from its header, before its pixels are decoded)."""
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for broken metadata
        raise DecodeError(
            f"corrupt or truncated {img.format} (reading its EXIF orientation): {type(err).__name__}: {err}"
        ) from err
    w, h = img.size
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def to_codec_input(pixels: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [-0.5, 0.5], the reference's input range."""
    return pixels.astype(np.float32) / 255.0 - 0.5


@dataclass(frozen=True)
class ImagePreprocessor:
    """The image branch of the runtime: bytes -> (uint8 pixels, metadata) and -> codec input."""

    policy: ImagePolicy
    modality: str = "image"
    device_decode: ClassVar[bool] = False  # decoded on the CPU (pipeline.preprocess.factory.Preprocessor)

    def decode(self, data: bytes, item: Any = None) -> Decoded:
        return decode_image(data, self.policy)

    def codec_input(self, pixels: np.ndarray) -> np.ndarray:
        return to_codec_input(pixels)

    def input_size(self, pixels: np.ndarray) -> tuple[int, ...]:
        return tuple(pixels.shape[1:])

    def fixed_shape(self) -> tuple[int, ...] | None:
        """(C, H, W) when every sample has the same shape (the Zarr sink needs it, or buckets)."""
        if self.policy.buckets:
            return None
        if self.policy.crop == "center" and self.policy.size is not None:
            return (self.policy.channels, self.policy.size, self.policy.size)
        return None

    def bucket_shapes(self) -> dict[str, tuple[int, ...]] | None:
        """Bucket name -> codec input (C, H, W), or None when unbucketed."""
        if not self.policy.buckets:
            return None
        return {bucket_name(b): (self.policy.channels, b[1], b[0]) for b in self.policy.buckets}

    def to_dict(self) -> dict[str, Any]:
        return {"modality": "image", **self.policy.to_dict()}
