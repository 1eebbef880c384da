"""Raster decoding: multi-band / multi-page TIFF bytes -> float32 (C, H, W) in [-0.5, 0.5]. No I/O.

Bands. The first series of the TIFF (tifffile's view of its pages) gives the bands: every axis
other than Y and X (samples S, pages I/Q, planes...) is flattened, in file order, into channels.
Further series of the same size and dtype are appended as more bands (multi-page files written
page by page); masks, thumbnails and reduced-resolution pages are ignored. The band count must
equal the codec's channels: anything else is refused (DecodeError), never padded or dropped.

Scaling rule (one formula, x = (clip(v, lo, hi) - lo) / (hi - lo) - 0.5, where [lo, hi] is):
    value_range given (--range LO,HI)    [LO, HI] for every dtype (e.g. 0,10000 for Sentinel-2 L2A)
    uint8 / uint16                        [0, 255] / [0, 65535]  (i.e. /255, /65535)
    other integers, bool                  the dtype's full range
    floats                                this image's min and max over all bands (finite values)
Non-finite values (nodata NaN) become lo before scaling; their count is recorded. The meta
records `value_range` [lo, hi] and `scaling`, so values can be restored:
    v = (x + 0.5) * (hi - lo) + lo
Then the image policy applies (resize the shorter side / center-crop, as for images), band by
band in float (Pillow mode "F"), clipped back to [-0.5, 0.5] after resampling overshoot.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from .image import _RESAMPLE, Decoded, DecodeError, ImagePolicy, _resize_plan

MASK_PHOTOMETRIC = 4  # TIFF PhotometricInterpretation "transparency mask"
REDUCED_OR_MASK = 0b101  # NewSubfileType bits: reduced-resolution page, transparency mask


def _bands_of(series) -> tuple[int, int, int]:
    """(bands, H, W) of a tifffile series, from its axes: every non-Y/X axis is a band axis."""
    axes, shape = series.axes, series.shape
    if "Y" not in axes or "X" not in axes:
        raise DecodeError(f"TIFF series has axes {axes!r}: no Y/X image plane")
    h, w = shape[axes.index("Y")], shape[axes.index("X")]
    return int(np.prod(shape)) // (h * w), h, w


def _as_bands(array: np.ndarray, axes: str) -> np.ndarray:
    """Move Y and X last and flatten the rest into one band axis: (C, H, W)."""
    order = [i for i, a in enumerate(axes) if a not in "YX"] + [axes.index("Y"), axes.index("X")]
    array = np.transpose(array, order)
    return array.reshape(-1, *array.shape[-2:])


def value_range_for(bands: np.ndarray, given: tuple[float, float] | None) -> tuple[float, float, str]:
    """(lo, hi, rule name) of the documented scaling rule."""
    if given is not None:
        return float(given[0]), float(given[1]), "range"
    dtype = bands.dtype
    if dtype == np.bool_:
        return 0.0, 1.0, "dtype"
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return float(info.min), float(info.max), "dtype"
    finite = bands[np.isfinite(bands)]
    if finite.size == 0:
        raise DecodeError("raster has no finite values (all NaN/inf)")
    return float(finite.min()), float(finite.max()), "minmax"


def scale_bands(bands: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, int]:
    """The scaling formula, in float64 then float32; (scaled, non-finite count)."""
    x = bands.astype(np.float64)
    bad = ~np.isfinite(x)
    nodata = int(bad.sum())
    if nodata:
        x[bad] = lo
    x = (np.clip(x, lo, hi) - lo) / max(hi - lo, 1e-300) - 0.5
    return x.astype(np.float32), nodata


def decode_raster(
    data: bytes, policy: ImagePolicy, value_range: tuple[float, float] | None = None
) -> Decoded:
    """Decode, scale and resize/crop one TIFF. Raises DecodeError with a specific reason."""
    if not data:
        raise DecodeError("empty file (0 bytes)")
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            if not tif.series:
                raise DecodeError("not a readable TIFF: no image series (corrupt or empty)")
            first = tif.series[0]
            _, h, w = _bands_of(first)
            if h * w > policy.max_pixels:
                raise DecodeError(f"raster is {w}x{h} = {w * h} pixels, over the cap of {policy.max_pixels}")
            parts = [first]
            for s in tif.series[1:]:
                page = s.pages[0] if s.pages else None
                if page is None or s.dtype != first.dtype or _bands_of(s)[1:] != (h, w):
                    continue
                if page.photometric == MASK_PHOTOMETRIC or (page.subfiletype or 0) & REDUCED_OR_MASK:
                    continue
                parts.append(s)
            for s in parts:  # a cut strip still decodes (LZW) to a partial band: refuse it
                for page in s.pages:
                    _check_extents(page, len(data))
            bands_total = sum(_bands_of(s)[0] for s in parts)
            if bands_total != policy.channels:
                raise DecodeError(
                    f"raster has {bands_total} bands; the codec takes {policy.channels} channels "
                    "(use a codec trained for this band count)"
                )
            dtype = str(first.dtype)
            if np.issubdtype(first.dtype, np.complexfloating):
                raise DecodeError(f"complex samples ({dtype}) are not supported")
            bands = np.concatenate([_as_bands(s.asarray(), s.axes) for s in parts])
    except DecodeError:
        raise
    except MemoryError as err:
        raise DecodeError(f"raster too large to decode: {err}") from err
    except Exception as err:  # noqa: BLE001 - tifffile raises many types for corrupt/unsupported files
        raise DecodeError(f"not a readable TIFF: {type(err).__name__}: {err}") from err
    lo, hi, rule = value_range_for(bands, value_range)
    x, nodata = scale_bands(bands, lo, hi)
    (rw, rh), box = _resize_plan(w, h, policy)
    if (rw, rh) != (w, h) or box != (0, 0, rw, rh):
        x = np.stack([_resize_band(b, (rw, rh), box, policy.resample) for b in x])
        x = np.clip(x, -0.5, 0.5)
    meta = {
        "original_size": [w, h],
        "resized_size": [rw, rh],
        "crop_box": list(box),
        "dtype": dtype,
        "bands": int(bands_total),
        "value_range": [lo, hi],
        "scaling": rule,
        "nodata_pixels": nodata,
    }
    return Decoded(array=np.ascontiguousarray(x, dtype=np.float32), meta=meta)


def _check_extents(page, size: int) -> None:
    """Every strip / tile of a tifffile page (or frame) inside the file's bytes."""
    for i, (offset, count) in enumerate(zip(page.dataoffsets, page.databytecounts, strict=False)):
        if offset + count > size:
            raise DecodeError(
                f"truncated TIFF: strip/tile {i} ends at byte {offset + count}, the file has {size}"
            )


def _resize_band(band: np.ndarray, size: tuple[int, int], box: tuple[int, int, int, int], resample: str):
    img = Image.fromarray(band, mode="F")
    if img.size != size:
        img = img.resize(size, _RESAMPLE[resample], reducing_gap=None)
    if box != (0, 0, *size):
        img = img.crop(box)
    return np.asarray(img, dtype=np.float32)


@dataclass(frozen=True)
class RasterPreprocessor:
    """The raster branch of the runtime: TIFF bytes -> float32 (C, H, W) in [-0.5, 0.5] + metadata."""

    policy: ImagePolicy
    value_range: tuple[float, float] | None = None
    modality: str = "raster"
    device_decode: ClassVar[bool] = False  # decoded on the CPU (pipeline.preprocess.factory.Preprocessor)

    def __post_init__(self) -> None:
        if self.value_range is not None:
            lo, hi = self.value_range
            if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
                raise ValueError(f"--range must be two finite numbers LO < HI, got {self.value_range}")

    @classmethod
    def from_settings(cls, image: Any, raster: Any, codec: Any) -> RasterPreprocessor:
        """Built from the run's ImageSettings (size, crop), RasterSettings (value range) and the
        codec's channels and 2^J."""
        c = codec.config
        if c.kind != "2d":
            raise ValueError(f"rasters need a 2-D codec; {getattr(codec, 'name', 'this codec')} is {c.kind}")
        value_range = raster.value_range
        return cls(
            ImagePolicy(size=image.size, crop=image.crop, channels=c.channels, multiple=c.block),
            tuple(value_range) if value_range is not None else None,
        )

    def decode(self, data: bytes, item: Any = None) -> Decoded:
        return decode_raster(data, self.policy, self.value_range)

    def codec_input(self, array: np.ndarray) -> np.ndarray:
        return np.asarray(array, dtype=np.float32)

    def input_size(self, array: np.ndarray) -> tuple[int, ...]:
        return tuple(array.shape[1:])

    def fixed_shape(self) -> tuple[int, ...] | None:
        if self.policy.crop == "center" and self.policy.size is not None:
            return (self.policy.channels, self.policy.size, self.policy.size)
        return None

    def bucket_shapes(self) -> dict[str, tuple[int, ...]] | None:
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "modality": "raster",
            **self.policy.to_dict(),
            "value_range": list(self.value_range) if self.value_range is not None else None,
            "scaling": "range"
            if self.value_range is not None
            else "dtype (uint8/255, uint16/65535), float min/max",
        }
