"""Horizontal flips in the latent domain: the best latent-side flip of a codec, and whether it is exact.

A mirrored image x'[m] = x[N-1-m] is not a symmetry of the periodized bior4.4 packet transform: the
filters are whole-sample symmetric, so the mirror maps the kept (even) phase of every decimation to
the odd phase, and only a mirror about a sample (x[-m mod N], i.e. flip + 1-pixel circular shift) is
exact at one level, with a different latent shift for the low and the high band. After J levels the
bands disagree on the shift, and the 1x1 encoder mixes all bands of one position, so no latent flip
(mirror of the latent W axis + a channel permutation with signs + a shift) reproduces the encoder's
latent of the mirrored image. `fit_latent_flip` finds the best such map from data,
`latent_flip_is_exact` checks a codec on a probe, and benchmarks/flip_exactness.py measures by how
much the best map is off (docs/flips.md). The codec's own code knows nothing of this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from .model import WaLLoC

SHIFTS = (-2, -1, 0, 1, 2)  # latent shifts tried after mirroring the latent


@dataclass(frozen=True)
class LatentFlip:
    """z -> roll(sign * z[perm] mirrored along the last axis, shift): a candidate latent flip."""

    perm: tuple[int, ...]  # output channel c is input channel perm[c]
    sign: tuple[int, ...]  # +1 / -1 per output channel
    shift: int  # circular shift along the last axis after mirroring

    def __call__(self, z: Tensor) -> Tensor:
        """Apply to image latents (..., C, h, w); int8 stays int8 (a sign flip saturates at +-127)."""
        out = z.index_select(-3, torch.tensor(self.perm, device=z.device)).flip(-1)
        sign = torch.tensor(self.sign, device=z.device).view(-1, 1, 1)
        if z.is_floating_point():
            out = out * sign.to(z.dtype)
        else:
            out = (out.to(torch.int16) * sign).clamp(-127, 127).to(z.dtype)
        return torch.roll(out, self.shift, dims=-1) if self.shift else out


def mirror(x: Tensor) -> Tensor:
    """The horizontally mirrored signal (last axis reversed): what --flip-pair encodes."""
    return x.flip(-1)


def fit_latent_flip(codec: WaLLoC, x: Tensor) -> tuple[LatentFlip, float]:
    """The best latent flip for this codec on images x (B, C, H, W) in [-0.5, 0.5], and its error.

    Compares the continuous latents (before companding) of mirror(x) with those of x mirrored along
    the latent W axis and shifted: per shift, the channel assignment that maximises |correlation|
    (Hungarian), signs from the correlations. Error: max |difference| / max |latent| (0 = exact)."""
    with torch.no_grad():
        y = codec.encode_continuous(codec.pad(x)).double()
        target = codec.encode_continuous(codec.pad(mirror(x))).double()
    c = y.shape[1]
    a = target.transpose(0, 1).reshape(c, -1)
    best = None
    for shift in SHIFTS:
        b = torch.roll(y.flip(-1), shift, dims=-1).transpose(0, 1).reshape(c, -1)
        an = (a - a.mean(1, keepdim=True)) / a.std(1, keepdim=True).clamp_min(1e-12)
        bn = (b - b.mean(1, keepdim=True)) / b.std(1, keepdim=True).clamp_min(1e-12)
        corr = (an @ bn.T / a.shape[1]).numpy()
        rows, cols = linear_sum_assignment(-np.abs(corr))
        score = float(np.abs(corr[rows, cols]).sum())
        if best is None or score > best[0]:
            sign = tuple(int(np.sign(corr[r, k]) or 1) for r, k in zip(rows, cols, strict=True))
            best = (score, LatentFlip(perm=tuple(int(k) for k in cols), sign=sign, shift=shift))
    flip = best[1]
    err = (flip(y) - target).abs().max() / target.abs().max().clamp_min(1e-12)
    return flip, float(err)


def probe_images(channels: int, size: int = 64, count: int = 2, seed: int = 0) -> Tensor:
    """Smooth random images (random noise is too easy to mistake for a symmetry-free input)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, channels, size // 8, size // 8, generator=g) - 0.5
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return (smooth + 0.05 * (torch.rand(count, channels, size, size, generator=g) - 0.5)).clamp(-0.5, 0.5)


def latent_flip_is_exact(codec: WaLLoC, tolerance: float = 1e-5) -> bool:
    """Whether some latent flip reproduces the latents of mirrored inputs (images only).

    Exact means to float rounding on a probe; only then can a loader flip latents instead of storing
    a second latent (--flip-pair). False for every bundled codec (docs/flips.md)."""
    if codec.config.kind != "2d":
        return False
    _, err = fit_latent_flip(codec, probe_images(codec.config.channels))
    return err < tolerance
