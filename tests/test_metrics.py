import math

import pytest
import torch

from pipeline.metrics import ms_ssim, psnr, si_sdr, snr, ssim


def test_psnr_known_mse():
    x = torch.zeros(1, 3, 8, 8)
    assert psnr(x, x + 0.1) == pytest.approx(20.0)  # mse 0.01, peak 1
    assert psnr(x, x + 0.1, data_range=255) == pytest.approx(20 + 20 * math.log10(255))


def test_ssim_identity_and_constants():
    x = torch.rand(2, 3, 32, 32)
    assert ssim(x, x) == pytest.approx(1.0)
    # flat images: only the luminance term is left, (2ab + C1) / (a^2 + b^2 + C1)
    a, b, c1 = 0.3, 0.6, 0.01**2
    got = ssim(torch.full((1, 1, 16, 16), a), torch.full((1, 1, 16, 16), b))
    assert got == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1))


def test_ssim_falls_with_noise_and_is_symmetric():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 48, 48, generator=g)
    noisy = [x + s * torch.randn(x.shape, generator=g) for s in (0.01, 0.05, 0.2)]
    values = [ssim(x, y) for y in noisy]
    assert values[0] > values[1] > values[2]
    assert ssim(x, noisy[1]) == pytest.approx(ssim(noisy[1], x))
    # an inverted copy of a zero-mean-structure image is anti-correlated: SSIM < 0
    assert ssim(x, 1 - x) < 0


def test_snr_and_si_sdr():
    t = torch.linspace(0, 1, 4000)
    x = torch.sin(2 * math.pi * 50 * t).view(1, 1, -1)
    noise = 0.1 * torch.sin(2 * math.pi * 313 * t).view(1, 1, -1)  # orthogonal to x
    expected = 10 * math.log10(x.pow(2).sum() / noise.pow(2).sum())
    assert snr(x, x + noise) == pytest.approx(expected, abs=1e-6)
    assert si_sdr(x, x + noise) == pytest.approx(expected, abs=0.01)
    assert si_sdr(x, 3 * (x + noise)) == pytest.approx(expected, abs=0.01)  # scale-invariant
    assert snr(x, 3 * (x + noise)) < 0


def test_ms_ssim_single_scale_is_ssim_and_it_falls_with_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.avg_pool2d(torch.rand(2, 3, 200, 200, generator=g), 3, 1, 1)
    noisy = [(x + s * torch.randn(x.shape, generator=g)).clamp(0, 1) for s in (0.01, 0.05, 0.2)]
    assert ms_ssim(x, x) == pytest.approx(1.0)
    assert ms_ssim(x, noisy[1], weights=(1.0,)) == pytest.approx(ssim(x, noisy[1]), rel=1e-9)
    values = [ms_ssim(x, y) for y in noisy]
    assert values[0] > values[1] > values[2]
    # blur hurts fine scales only: MS-SSIM (mostly coarse weight) forgives it more than SSIM does
    blurred = torch.nn.functional.avg_pool2d(x, 5, 1, 2)
    assert ms_ssim(x, blurred) > ssim(x, blurred)
    with pytest.raises(ValueError, match="161"):
        ms_ssim(x[..., :100, :100], x[..., :100, :100])


def test_chroma_psnr_sees_colour_and_not_luma():
    from pipeline.metrics import chroma, chroma_psnr

    g = torch.Generator().manual_seed(0)
    grey = torch.rand(2, 1, 16, 16, generator=g).expand(2, 3, 16, 16)
    assert torch.allclose(chroma(grey), torch.zeros(2, 2, 16, 16, dtype=torch.float64), atol=1e-6)
    colour = torch.rand(2, 3, 16, 16, generator=g)
    # a luma-only change (the same offset on R, G and B) leaves chroma as it was
    assert chroma_psnr(colour, (colour + 0.1).clamp(0, 1)) > chroma_psnr(colour, grey) + 10
    assert chroma_psnr(colour, colour) > 100
    with pytest.raises(ValueError):
        chroma(torch.rand(1, 1, 4, 4))
