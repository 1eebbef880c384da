"""Distortion metrics for training logs and rate-distortion reports: PSNR, SSIM, MS-SSIM, SNR, SI-SDR.

All take float tensors; images in [0, 1] (or any range, given `data_range`), batched (B, C, H, W).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

SSIM_K1, SSIM_K2 = 0.01, 0.03  # Wang et al. 2004
SSIM_SIGMA, SSIM_WINDOW = 1.5, 11  # Gaussian window, as in the paper and skimage(gaussian_weights=True)
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang, Simoncelli & Bovik 2003, 5 scales


def psnr(x: Tensor, y: Tensor, data_range: float = 1.0) -> float:
    """PSNR in dB of y against x over all elements."""
    mse = F.mse_loss(y.double(), x.double()).item()
    return 10 * math.log10(data_range**2 / max(mse, 1e-20))


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype) -> Tensor:
    t = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_map(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """Per-pixel SSIM (B, C, H-10, W-10): Gaussian-weighted local statistics, 'valid' region only
    (no padding), population covariances, each channel separately."""
    luminance, contrast_structure = _ssim_terms(x, y, data_range)
    return luminance * contrast_structure


def _ssim_terms(x: Tensor, y: Tensor, data_range: float) -> tuple[Tensor, Tensor]:
    """SSIM's luminance and contrast-structure maps (their product is the SSIM map)."""
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim needs two (B, C, H, W) tensors of one shape, got {x.shape} and {y.shape}")
    x, y = x.double(), y.double()
    c = x.shape[1]
    g = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA, torch.float64)
    wh = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    ww = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(t, wh, groups=c), ww, groups=c)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    return (2 * mx * my + c1) / (mx * mx + my * my + c1), (2 * cxy + c2) / (vx + vy + c2)


def ssim(x: Tensor, y: Tensor, data_range: float = 1.0) -> float:
    """Mean SSIM over pixels, channels and batch (images at least 11 x 11)."""
    return ssim_map(x, y, data_range).mean().item()


def ms_ssim(
    x: Tensor, y: Tensor, data_range: float = 1.0, weights: tuple[float, ...] = MS_SSIM_WEIGHTS
) -> float:
    """Multi-scale SSIM (Wang et al. 2003): contrast-structure at every scale, luminance at the
    coarsest, 2x average pooling between scales; per image and channel, then averaged. Negative
    terms are clipped to 0 (as pytorch-msssim does). 5 scales need images of at least 161 x 161."""
    need = (SSIM_WINDOW - 1) * 2 ** (len(weights) - 1) + 1
    if min(x.shape[-2:]) < need:
        raise ValueError(f"ms_ssim with {len(weights)} scales needs images of >= {need} px, got {x.shape}")
    x, y = x.double(), y.double()
    score = torch.ones(x.shape[:2], dtype=torch.float64)
    for j, w in enumerate(weights):
        luminance, cs = _ssim_terms(x, y, data_range)
        last = j == len(weights) - 1
        term = (luminance * cs if last else cs).mean((-2, -1)).clamp_min(0)
        score = score * term**w
        if not last:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return score.mean().item()


def snr(x: Tensor, y: Tensor) -> float:
    """Signal-to-noise ratio in dB of the estimate y of signal x."""
    x, y = x.double(), y.double()
    return 10 * math.log10(x.pow(2).sum().item() / max((x - y).pow(2).sum().item(), 1e-30))


def si_sdr(x: Tensor, y: Tensor) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019): y's error after the best scaling of x,
    per channel (the last axis is time), averaged."""
    x, y = x.double().flatten(0, -2), y.double().flatten(0, -2)
    x = x - x.mean(-1, keepdim=True)
    y = y - y.mean(-1, keepdim=True)
    alpha = (x * y).sum(-1, keepdim=True) / x.pow(2).sum(-1, keepdim=True).clamp_min(1e-30)
    target, noise = alpha * x, y - alpha * x
    ratio = target.pow(2).sum(-1) / noise.pow(2).sum(-1).clamp_min(1e-30)
    return (10 * torch.log10(ratio.clamp_min(1e-30))).mean().item()
