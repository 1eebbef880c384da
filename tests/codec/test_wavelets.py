"""The fused wavelet packet transform against an independent float64 model built on pywt."""

from __future__ import annotations

import numpy as np
import pytest
import pywt
import torch

from pipeline.codec import wavelets


def _pywt_packet_1d(x: np.ndarray, levels: int) -> np.ndarray:
    """Reference-layout 1-D packet transform of (C, L) with pywt's periodization DWT, in float64."""
    bands = x[:, None, :]  # (C, bands, n)
    for _ in range(levels):
        a, d = pywt.dwt(bands, "bior4.4", mode="periodization", axis=-1)
        bands = np.stack([a, d], axis=2).reshape(x.shape[0], -1, a.shape[-1])
    return bands.reshape(-1, bands.shape[-1])


def _pywt_packet_2d(x: np.ndarray, levels: int) -> np.ndarray:
    """Reference-layout 2-D packet transform of (C, H, W): per level bands (LL, H0, H1, H2)."""
    bands = x[:, None]  # (C, bands, h, w)
    for _ in range(levels):
        ll, (lh, hl, hh) = pywt.dwt2(bands, "bior4.4", mode="periodization", axes=(-2, -1))
        # pytorch_wavelets orders the three detail bands (lh, hl, hh) with lh low along W
        bands = np.stack([ll, lh, hl, hh], axis=2).reshape(x.shape[0], -1, *ll.shape[-2:])
    return bands.reshape(-1, *bands.shape[-2:])


@pytest.mark.parametrize("levels", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("shape", [(3, 64, 96), (1, 32, 32), (4, 96, 32)])
def test_analysis_2d_matches_pywt(levels, shape):
    c, h, w = shape
    if h % 2**levels or w % 2**levels:
        pytest.skip("size not divisible")
    x = np.random.default_rng(levels).uniform(-0.5, 0.5, size=(2, *shape))
    ours = wavelets.analysis_2d(torch.from_numpy(x), levels).numpy()
    for i in range(2):
        expected = _pywt_packet_2d(x[i], levels)
        assert np.abs(ours[i] - expected).max() < 1e-10


@pytest.mark.parametrize("levels", [1, 3, 5, 8])
def test_analysis_1d_matches_pywt(levels):
    x = np.random.default_rng(levels).uniform(-0.5, 0.5, size=(3, 2, 2**levels * 6))
    ours = wavelets.analysis_1d(torch.from_numpy(x), levels).numpy()
    for i in range(3):
        assert np.abs(ours[i] - _pywt_packet_1d(x[i], levels)).max() < 1e-10


@pytest.mark.parametrize("levels", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("shape", [(3, 128, 96), (1, 32, 64), (5, 64, 64)])
def test_perfect_reconstruction_2d_float32(levels, shape):
    x = torch.rand(3, *shape) - 0.5
    X = wavelets.analysis_2d(x, levels)
    c, h, w = shape
    assert X.shape == (3, c * 4**levels, h >> levels, w >> levels)
    assert (wavelets.synthesis_2d(X, levels) - x).abs().max() < 1e-5


@pytest.mark.parametrize("levels", [1, 3, 5, 8, 10])
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_perfect_reconstruction_1d_float32(levels, channels):
    x = torch.rand(2, channels, 2**levels * 8) - 0.5
    X = wavelets.analysis_1d(x, levels)
    assert X.shape == (2, channels * 2**levels, 8)
    assert (wavelets.synthesis_1d(X, levels) - x).abs().max() < 1e-5


@pytest.mark.parametrize("size", [(8, 8), (16, 8), (8, 40)])
def test_tiny_images_wrap_periodically(size):
    """Fewer blocks than the operator's support: the cyclic extension wraps several times."""
    x = np.random.default_rng(0).uniform(-0.5, 0.5, size=(1, 2, *size))
    ours = wavelets.analysis_2d(torch.from_numpy(x), 3).numpy()[0]
    assert np.abs(ours - _pywt_packet_2d(x[0], 3)).max() < 1e-10
    back = wavelets.synthesis_2d(torch.from_numpy(ours)[None], 3).numpy()
    assert np.abs(back - x).max() < 1e-10


def test_large_batch_is_chunked_consistently():
    x = torch.rand(40, 3, 64, 64) - 0.5
    whole = wavelets.analysis_2d(x, 3)
    parts = torch.cat([wavelets.analysis_2d(x[i : i + 1], 3) for i in range(40)])
    assert (whole - parts).abs().max() < 1e-6


def test_rejects_sizes_not_divisible_by_block():
    with pytest.raises(ValueError, match="not divisible by 2\\^J"):
        wavelets.analysis_2d(torch.zeros(1, 3, 60, 64), 3)
    with pytest.raises(ValueError, match="not divisible by 2\\^J"):
        wavelets.analysis_1d(torch.zeros(1, 2, 100), 3)


def test_stage_plan_covers_all_levels():
    for levels in range(1, 13):
        plan = wavelets.plan_stages(levels)
        assert sum(plan) == levels
        assert max(plan) <= wavelets.MAX_LEVELS_PER_STAGE
