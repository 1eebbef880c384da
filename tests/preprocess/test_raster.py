"""Raster preprocessing on real TIFFs: band layouts (planar, interleaved, pages), the per-dtype
scaling rule and its inverse, --range, nodata, resize/crop, band-count and corrupt-file errors."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
from PIL import Image

from pipeline.codec import CodecConfig
from pipeline.config import ImageSettings, RasterSettings
from pipeline.preprocess.factory import make_preprocessor
from pipeline.preprocess.image import DecodeError, ImagePolicy
from pipeline.preprocess.raster import RasterPreprocessor, decode_raster


def tiff(array: np.ndarray, **kwargs) -> bytes:
    out = io.BytesIO()
    tifffile.imwrite(out, array, **kwargs)
    return out.getvalue()


def keep(channels: int) -> ImagePolicy:
    """No resizing: values can be compared pixel for pixel."""
    return ImagePolicy(size=None, crop="none", channels=channels)


def test_uint16_planar_bands_scale_by_65535():
    bands = np.random.default_rng(0).integers(0, 65536, (5, 12, 9), dtype=np.uint16)
    decoded = decode_raster(tiff(bands, photometric="minisblack"), keep(5))
    np.testing.assert_allclose(decoded.array, bands / 65535.0 - 0.5, atol=1e-7)
    meta = decoded.meta
    assert (meta["bands"], meta["dtype"], meta["scaling"], meta["value_range"]) == (
        5,
        "uint16",
        "dtype",
        [0.0, 65535.0],
    )
    assert meta["original_size"] == [9, 12]
    json.dumps(meta)


def test_uint8_interleaved_samples_scale_by_255():
    pixels = np.random.default_rng(1).integers(0, 256, (10, 8, 3), dtype=np.uint8)
    decoded = decode_raster(tiff(pixels, photometric="rgb"), keep(3))
    np.testing.assert_allclose(decoded.array, pixels.transpose(2, 0, 1) / 255.0 - 0.5, atol=1e-7)


def test_signed_integers_use_the_dtype_range():
    dem = np.array([[-32768, 0], [100, 32767]], dtype=np.int16)
    decoded = decode_raster(tiff(dem), keep(1))
    assert decoded.meta["value_range"] == [-32768.0, 32767.0]
    assert decoded.array[0, 0, 0] == pytest.approx(-0.5) and decoded.array[0, 1, 1] == pytest.approx(0.5)


def test_float_min_max_and_restore():
    bands = np.random.default_rng(2).normal(300, 50, (2, 6, 7)).astype(np.float32)
    decoded = decode_raster(tiff(bands, photometric="minisblack"), keep(2))
    lo, hi = decoded.meta["value_range"]
    assert decoded.meta["scaling"] == "minmax" and (lo, hi) == (float(bands.min()), float(bands.max()))
    restored = (decoded.array.astype(np.float64) + 0.5) * (hi - lo) + lo
    np.testing.assert_allclose(restored, bands, rtol=1e-5)
    assert decoded.array.min() == -0.5 and decoded.array.max() == 0.5


def test_given_range_clips_every_dtype():
    reflectance = np.array([[[0, 5000], [10000, 14000]]], dtype=np.uint16)
    pre = RasterPreprocessor(keep(1), value_range=(0.0, 10000.0))
    decoded = pre.decode(tiff(reflectance))
    np.testing.assert_allclose(decoded.array[0], [[-0.5, 0.0], [0.5, 0.5]])
    assert decoded.meta["scaling"] == "range" and decoded.meta["value_range"] == [0.0, 10000.0]
    with pytest.raises(ValueError, match="LO < HI"):
        RasterPreprocessor(keep(1), value_range=(5.0, 5.0))


def test_nodata_becomes_the_low_end():
    bands = np.array([[[1.0, np.nan], [3.0, np.inf]]], dtype=np.float32)
    decoded = decode_raster(tiff(bands), keep(1))
    assert decoded.meta["nodata_pixels"] == 2 and decoded.meta["value_range"] == [1.0, 3.0]
    np.testing.assert_allclose(decoded.array[0], [[-0.5, -0.5], [0.5, -0.5]])
    with pytest.raises(DecodeError, match="no finite values"):
        decode_raster(tiff(np.full((1, 2, 2), np.nan, np.float32)), keep(1))


def test_pages_are_bands():
    bands = np.random.default_rng(3).integers(0, 65536, (4, 8, 8), dtype=np.uint16)
    written = io.BytesIO()
    with tifffile.TiffWriter(written) as tif:
        for band in bands:
            tif.write(band, photometric="minisblack")  # one series per page
    decoded = decode_raster(written.getvalue(), keep(4))
    np.testing.assert_allclose(decoded.array, bands / 65535.0 - 0.5, atol=1e-7)
    pillow = io.BytesIO()
    pages = [Image.fromarray(b) for b in bands]
    pages[0].save(pillow, format="TIFF", save_all=True, append_images=pages[1:])
    np.testing.assert_allclose(decode_raster(pillow.getvalue(), keep(4)).array, decoded.array)


def test_compressed_tiffs():
    pytest.importorskip("imagecodecs")
    bands = np.random.default_rng(4).integers(0, 4096, (3, 16, 16), dtype=np.uint16)
    for compression in ("zlib", "lzw", "zstd"):
        data = tiff(bands, photometric="minisblack", compression=compression)
        np.testing.assert_allclose(decode_raster(data, keep(3)).array, bands / 65535.0 - 0.5, atol=1e-7)


def test_resize_and_center_crop():
    bands = np.random.default_rng(5).integers(0, 65536, (6, 40, 60), dtype=np.uint16)
    policy = ImagePolicy(size=16, crop="center", channels=6)
    decoded = decode_raster(tiff(bands, photometric="minisblack"), policy)
    assert decoded.array.shape == (6, 16, 16) and decoded.array.dtype == np.float32
    assert decoded.meta["resized_size"] == [24, 16] and decoded.meta["crop_box"] == [4, 0, 20, 16]
    assert -0.5 <= decoded.array.min() and decoded.array.max() <= 0.5
    flat = np.full((2, 40, 60), 1000, dtype=np.uint16)
    same = decode_raster(tiff(flat, photometric="minisblack"), ImagePolicy(size=16, channels=2))
    np.testing.assert_allclose(same.array, 1000 / 65535 - 0.5, atol=1e-6)


def test_band_count_must_match_the_codec():
    data = tiff(np.zeros((13, 4, 4), np.uint16), photometric="minisblack")
    with pytest.raises(DecodeError, match="13 bands; the codec takes 3 channels"):
        decode_raster(data, keep(3))


def test_corrupt_and_oversized_inputs():
    with pytest.raises(DecodeError, match="empty file"):
        decode_raster(b"", keep(1))
    with pytest.raises(DecodeError, match="not a readable TIFF"):
        decode_raster(b"II*\x00garbage" * 10, keep(1))
    with pytest.raises(DecodeError, match="not a readable TIFF"):
        decode_raster(b"\x89PNG not a tiff", keep(1))
    with pytest.raises(DecodeError, match="over the cap"):
        decode_raster(
            tiff(np.zeros((1, 64, 64), np.uint8)), ImagePolicy(size=None, channels=1, max_pixels=1000)
        )


def test_preprocessor_from_settings_and_runtime_registry():
    codec = SimpleNamespace(config=CodecConfig(kind="2d", channels=5, J=2, latent_dim=4, Nd=8))
    image, raster = ImageSettings(size=32), RasterSettings(value_range=(0.0, 10000.0))
    pre = make_preprocessor("raster", codec, image=image, raster=raster)
    assert isinstance(pre, RasterPreprocessor) and pre.value_range == (0.0, 10000.0)
    assert pre.fixed_shape() == (5, 32, 32) and pre.policy.multiple == 4
    json.dumps(pre.to_dict())
    decoded = pre.decode(tiff(np.ones((5, 40, 40), np.uint16), photometric="minisblack"))
    assert pre.codec_input(decoded.array).shape == (5, 32, 32) and pre.input_size(decoded.array) == (32, 32)
    audio_codec = SimpleNamespace(config=CodecConfig(kind="1d", channels=2, J=2, latent_dim=4, Nd=8))
    with pytest.raises(ValueError, match="2-D codec"):
        RasterPreprocessor.from_settings(image, raster, audio_codec)
