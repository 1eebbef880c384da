"""Flips and shifts in the latent domain: which are exact for the periodized bior4.4 packet transform
and the bundled codecs, and the LatentFlip mechanics (docs/flips.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.codec import load, wavelets
from pipeline.codec.flip import LatentFlip, fit_latent_flip, latent_flip_is_exact, mirror, probe_images
from pipeline.loaders.augment import exact_crop_margin, roll, roll_is_exact


def _best_band_match(y: torch.Tensor, target: torch.Tensor) -> float:
    """Smallest max |target - roll(mirror(y), s)| over shifts s, for one band."""
    return min(float((target - torch.roll(y.flip(-1), s, -1)).abs().max()) for s in range(-4, 5))


def test_one_level_mirror_lands_on_the_other_phase():
    """A mirror x[N-1-m] is reproduced by no band shift; a mirror about a sample x[-m] is, per band."""
    x = torch.randn(1, 1, 64, dtype=torch.float64)
    y = wavelets.analysis_1d(x, 1)[0]
    plain = wavelets.analysis_1d(mirror(x), 1)[0]
    about_sample = wavelets.analysis_1d(torch.roll(mirror(x), 1, -1), 1)[0]
    for band in range(2):
        assert _best_band_match(y[band], plain[band]) > 0.1
        assert _best_band_match(y[band], about_sample[band]) < 1e-9
    # ... but with a different shift per band, which a latent mixing the bands cannot follow
    shifts = [
        next(s for s in range(-4, 5) if torch.allclose(about_sample[b], torch.roll(y[b].flip(-1), s, -1)))
        for b in range(2)
    ]
    assert shifts[0] != shifts[1]


@pytest.mark.parametrize("name", ["rgb-16x-klt", "rgb-16x"])
def test_bundled_codecs_do_not_flip_exactly(name):
    codec = load(name).freeze()
    assert not latent_flip_is_exact(codec)
    x = probe_images(3, size=64, count=2, seed=3)
    flip, err = fit_latent_flip(codec, x)
    assert err > 0.1
    z, z_mirror = codec.encode(x), codec.encode(mirror(x))
    assert (flip(z) != z_mirror).float().mean() > 0.1  # int8 values that differ
    # the stored mirror latent (--flip-pair) reconstructs the mirror better than the flipped latent
    mse_pair = ((codec.decode(z_mirror) - mirror(x)) ** 2).mean()
    mse_flip = ((codec.decode(flip(z)) - mirror(x)) ** 2).mean()
    assert mse_pair < mse_flip


def test_latent_flip_mechanics():
    z = torch.randint(-127, 128, (2, 3, 4, 5), dtype=torch.int8)
    identity = LatentFlip(perm=(0, 1, 2), sign=(1, 1, 1), shift=0)
    assert torch.equal(identity(z), z.flip(-1))
    f = LatentFlip(perm=(2, 0, 1), sign=(1, -1, 1), shift=1)
    out = f(z)
    assert out.dtype == torch.int8
    assert torch.equal(out[:, 1], torch.roll(-z[:, 0].flip(-1), 1, -1))
    assert torch.allclose(f(z.float()), out.float())


def test_roll_by_whole_positions_is_exact():
    codec = load("rgb-16x-klt").freeze()
    assert roll_is_exact(codec)
    x = probe_images(3, size=64, count=2, seed=5)
    b = codec.config.block
    z = codec.encode(x)
    assert torch.equal(codec.encode(torch.roll(x, (2 * b, 3 * b), dims=(-2, -1))), roll(z, 2, 3))
    assert np.array_equal(roll(z.numpy(), 2, 3), roll(z, 2, 3).numpy())


def test_latent_crops_match_the_pixel_crop_only_inside_the_margin():
    codec = load("rgb-16x-klt").freeze()
    x = probe_images(3, size=128, count=2, seed=7)
    b, margin, crop, top, left = codec.config.block, exact_crop_margin(codec.config.J), 10, 3, 4
    z = codec.encode(x)[..., top : top + crop, left : left + crop]
    zc = codec.encode(x[..., top * b : (top + crop) * b, left * b : (left + crop) * b])
    inner = slice(margin, crop - margin)
    assert torch.equal(z[..., inner, inner], zc[..., inner, inner])
    assert not torch.equal(z[..., 0, :], zc[..., 0, :])  # the border wraps around the crop
