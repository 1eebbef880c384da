"""Every metric the project reports, in one place: codec training and rate-distortion reports
(pipeline.training) and the downstream learning jobs (pipeline.learning) use the same functions.

Distortion: PSNR, SSIM, MS-SSIM, SNR, SI-SDR. Tasks: accuracy, character / string accuracy,
colourfulness, chroma PSNR. Argument order is (reference, estimate) for every distortion metric.
Images are float tensors in [0, 1] (or any range, given `data_range`), batched (B, C, H, W).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
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


SI_SDR_EPS = 1e-12


def si_sdr(reference, estimate, *, per_channel: bool = False) -> float:
    """Scale-invariant SDR in dB (Le Roux et al., "SDR - half-baked or well done?", ICASSP 2019).

    The estimate is projected on the reference (both made zero-mean first), and that target is
    compared with what is left, so a scaled estimate scores the same. Tensors or arrays of one
    shape, time on the last axis. per_channel=False (the separation metric): everything flattened
    into one signal; per_channel=True (codec evaluation): one figure per channel (every leading
    index), averaged. A reference (channel) with no energy has no defined SI-SDR: NaN, left out of
    the average (all NaN: NaN)."""
    ref, est = _float64(reference), _float64(estimate)
    if ref.shape != est.shape:
        raise ValueError(f"estimate {est.shape} and reference {ref.shape} differ in shape")
    rows = (-1, ref.shape[-1]) if per_channel and ref.ndim else (1, -1)
    ref, est = ref.reshape(rows), est.reshape(rows)
    ref = ref - ref.mean(axis=1, keepdims=True)
    est = est - est.mean(axis=1, keepdims=True)
    energy = (ref * ref).sum(axis=1)
    scores = np.full(len(ref), np.nan)
    for i in np.flatnonzero(energy > SI_SDR_EPS):
        target = (est[i] @ ref[i]) / energy[i] * ref[i]
        noise = est[i] - target
        scores[i] = 10 * np.log10((target @ target + SI_SDR_EPS) / (noise @ noise + SI_SDR_EPS))
    return float(np.nanmean(scores)) if np.isfinite(scores).any() else float("nan")


def si_sdr_batch(references, estimates, lengths: np.ndarray | None = None) -> np.ndarray:
    """si_sdr per item of (N, ..., samples) arrays, each cut to its valid length (C6 `valid_length`)."""
    out = np.empty(len(estimates))
    for i, (ref, est) in enumerate(zip(references, estimates, strict=True)):
        n = est.shape[-1] if lengths is None else int(lengths[i])
        out[i] = si_sdr(ref[..., :n], est[..., :n])
    return out


def _float64(x) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().double().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Share of argmax predictions equal to the labels (any leading shape: (B, K) or (B, K, H, W))."""
    return (logits.argmax(dim=1) == labels).float().mean().item()


def char_accuracy(predicted: Sequence[str], truth: Sequence[str]) -> float:
    """Share of character positions read correctly, over strings of equal length position by position.

    A missing or extra character counts as wrong (the shorter string is padded)."""
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} strings")
    right = total = 0
    for p, t in zip(predicted, truth, strict=True):
        n = max(len(p), len(t))
        right += sum(a == b for a, b in zip(p.ljust(n, "\0"), t.ljust(n, "\0"), strict=True))
        total += n
    return right / total if total else 0.0


def string_accuracy(predicted: Sequence[str], truth: Sequence[str]) -> float:
    """Share of strings read entirely right."""
    return sum(p == t for p, t in zip(predicted, truth, strict=True)) / max(len(truth), 1)


def colourfulness(images: Tensor) -> Tensor:
    """Hasler & Suesstrunk (2003) colourfulness per image of a (B, 3, H, W) RGB batch in [0, 1].

    M = sqrt(sd(rg)^2 + sd(yb)^2) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2), rg = R - G,
    yb = (R + G) / 2 - B, on the 0-255 scale of the paper. A grey image scores 0."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"colourfulness needs (B, 3, H, W) RGB, got {tuple(images.shape)}")
    x = images.double() * 255
    r, g, b = x[:, 0].flatten(1), x[:, 1].flatten(1), x[:, 2].flatten(1)
    rg, yb = r - g, 0.5 * (r + g) - b
    sd = torch.sqrt(rg.std(dim=1, unbiased=False) ** 2 + yb.std(dim=1, unbiased=False) ** 2)
    mean = torch.sqrt(rg.mean(dim=1) ** 2 + yb.mean(dim=1) ** 2)
    return (sd + 0.3 * mean).float()


# ITU-R BT.601 chroma (the JPEG / PIL 'YCbCr' matrix), rows Cb and Cr, applied to RGB in [0, 1]
CHROMA_601 = ((-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))


def chroma(images: Tensor) -> Tensor:
    """(B, 3, H, W) RGB -> (B, 2, H, W) BT.601 Cb, Cr (zero-centred): the colour a grey image lacks."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"chroma needs (B, 3, H, W) RGB, got {tuple(images.shape)}")
    m = torch.tensor(CHROMA_601, dtype=torch.float64)
    return torch.einsum("cr,brhw->bchw", m, images.double())


def chroma_psnr(x: Tensor, y: Tensor) -> float:
    """PSNR in dB (peak 1) of y's Cb, Cr against x's: colour error alone, blind to luma, so a
    colorizer is scored on the colour it predicts, not on how sharp its luma is."""
    return psnr(chroma(x), chroma(y))
