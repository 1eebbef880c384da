import numpy as np
import pytest

from pipeline.codec import CodecConfig, build
from pipeline.training import evaluate as E
from pipeline.training.klt import fit_klt, klt_codec

from .helpers import batch


def _images(n: int = 2, size: int = 32) -> list[np.ndarray]:
    return [((x.permute(1, 2, 0).numpy() + 0.5) * 255).round().astype(np.uint8) for x in batch(n, size)]


def test_jpeg_points_trade_rate_for_quality_and_interpolate():
    images = _images()
    low, _ = E.pil_on_images(images, "JPEG", 10)
    high, recs = E.pil_on_images(images, "JPEG", 95)
    assert high.rate > low.rate and high.psnr > low.psnr and high.ssim > low.ssim
    assert recs[0].shape == images[0].shape
    mid = E.interpolate_psnr([low, high], (low.rate + high.rate) / 2)
    assert mid == pytest.approx((low.psnr + high.psnr) / 2)
    assert E.interpolate_psnr([low, high], high.rate * 2) is None


def test_codec_points_count_the_entropy_coded_bytes():
    cfg = CodecConfig(kind="2d", channels=3, J=2, latent_dim=6, decoder="linear")
    codec = klt_codec(cfg, fit_klt(build(cfg), [batch(8, offset=0)])).freeze()
    images = _images()
    points, recs = E.codec_on_images(codec, images, "klt", methods=("zstd",))
    (p,) = points
    z = codec.encode(batch(1, 32))
    assert p.extra["dimensionality_reduction"] == pytest.approx(3 * 16 / 6)
    assert 0 < p.rate <= 8 * (len(codec.to_bytes(z)) + 64) / (32 * 32)  # header + at most 8 bits a value
    assert p.psnr > 20 and recs[0].dtype == np.uint8


def test_targets_state_each_goal_as_met_or_missed_by_how_much():
    from pipeline.training.rd_report import targets

    def pt(method, rate, db):
        return E.Point(method, "x", rate, db)

    jpeg = [pt("JPEG", 0.2, 30.0), pt("JPEG", 0.4, 32.0)]
    webp = [pt("WEBP", 0.2, 32.0), pt("WEBP", 0.4, 34.0)]
    lines = targets([pt("deep", 0.3, 32.5), pt("klt", 0.3, 31.5)], {"JPEG": jpeg, "WebP": webp})
    text = "\n".join(lines)
    assert "+1.00 dB PSNR" in text and "target >= +1.5 dB: missed by 0.50 dB" in text
    assert "vs WebP at the same rate (0.300 bpp): -0.50 dB; target >= 0: missed by 0.50 dB" in text
    assert "vs JPEG at the same rate (0.300 bpp): +1.50 dB; target > 0: met" in text
    text = "\n".join(targets([pt("deep", 0.3, 33.5), pt("klt", 0.3, 31.5)], {"JPEG": jpeg, "WebP": webp}))
    assert "target >= +1.5 dB: met" in text and "target >= 0: met" in text
    text = "\n".join(targets([pt("deep", 0.9, 33.5), pt("klt", 0.9, 31.5)], {"JPEG": jpeg, "WebP": webp}))
    assert "vs WebP at the same rate: outside WebP's measured range" in text


def test_audio_target_compares_the_deep_codec_with_its_klt():
    from pipeline.training.rd_report import audio_targets

    klt = E.Point("klt", "x", 0.8, 43.0, si_sdr=21.0)
    (line,) = audio_targets([klt], [False])
    assert "no deep audio codec evaluated" in line and "missed" in line
    deep = E.Point("deep", "x", 0.8, 42.5, si_sdr=21.25)
    (line,) = audio_targets([klt, deep], [False, True])
    assert "deep vs klt: -0.50 dB PSNR, +0.25 dB SI-SDR" in line and "missed by 0.50 dB" in line
    (line,) = audio_targets([E.Point("deep", "x", 0.8, 43.5, si_sdr=22.0), klt], [True, False])
    assert line.rstrip().endswith(": met.")
