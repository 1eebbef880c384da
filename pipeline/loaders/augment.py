"""Latent-domain augmentation, only where it is exact (issue #5; measured in docs/flips.md).

"Exact" means: the augmented latent equals, bit for bit, the latent the pipeline would have stored
for the augmented image. For the periodized wavelet packet transform followed by a 1x1 encoder
(every bundled codec) that holds for
  - circular shifts by whole latent positions (2^J pixels): `roll`;
and not for
  - horizontal/vertical flips (the mirror lands on the other decimation phase; 90% of int8 values
    differ for rgb-16x-klt): store both latents with --flip-pair and pick with the loaders' flip="pair";
  - crops: a latent crop equals the encode of the matching 2^J-aligned pixel crop only at least
    `exact_crop_margin(J)` positions inside the crop's border (periodization wraps at the crop
    border), so a latent crop is a crop of the full image's latent, not the latent of the crop.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..codec.flip import latent_flip_is_exact
from ..codec.model import WaLLoC, _pointwise_conv

FILTER_HALF_SUPPORT = 4  # bior4.4 analysis lowpass: 9 taps, 4 either side of the centre


def roll_is_exact(codec: WaLLoC) -> bool:
    """Circular shifts commute with the codec: a 1x1 encoder on the periodized transform."""
    return _pointwise_conv(codec.encoder)


def roll(z: torch.Tensor | np.ndarray, dy: int, dx: int):
    """Circularly shift image latents (..., C, h, w) by (dy, dx) positions.

    Equals encode(roll(x, (dy * 2^J, dx * 2^J))) for codecs where roll_is_exact (measured: 0 of
    the int8 values differ; tests/codec/test_flip.py)."""
    if isinstance(z, np.ndarray):
        return np.roll(z, (dy, dx), axis=(-2, -1))
    return torch.roll(z, (dy, dx), dims=(-2, -1))


def random_roll(z: torch.Tensor | np.ndarray, rng: np.random.Generator):
    """`roll` by a uniformly drawn shift (the loader's seeded generator keeps epochs reproducible)."""
    h, w = z.shape[-2:]
    return roll(z, int(rng.integers(h)), int(rng.integers(w)))


def exact_crop_margin(levels: int) -> int:
    """Latent positions from a crop's border beyond which a latent crop equals the encode of the
    pixel crop (J levels of bior4.4: the analysis support reaches 4 (2^J - 1) pixels, i.e. less than
    this many positions; measured for J=3: 3.2% of positions differ at distance 3, none from 4)."""
    return math.ceil(FILTER_HALF_SUPPORT * (2**levels - 1) / 2**levels)


def flip_is_exact(codec: WaLLoC) -> bool:
    """Whether latents can be flipped instead of stored twice (False for every bundled codec)."""
    return latent_flip_is_exact(codec)
