"""Closed-form linear codec: the KLT (PCA) of the wavelet packet coefficients.

Each position's C*4^J (2-D) or C*2^J (1-D) wavelet packet coefficients form a vector X. With
mean mu and covariance V diag(lam) V^T, the best rank-k linear map (least squares in the
coefficient domain) keeps the k leading eigenvectors. The encoder also whitens and scales:

    y = s * diag(lam_k)^-1/2 V_k^T (X - mu)      every latent channel has std s = compander.scale
    X_hat = V_k diag(lam_k)^1/2 / s * y_hat + mu

so the Gaussian-CDF compander sees exactly the N(0, s^2) it is designed for and every channel
uses the full integer range (equal relative precision). bior4.4 is nearly orthogonal, so least
squares on the coefficients is close to least squares on the signal.

The result is a codec with `decoder="linear"`: a baseline, a quick default, and (the encoder
half) the starting point of a deep codec's 1x1 encoder.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from pipeline.codec import CodecConfig, WaLLoC, build

MIN_EIGENVALUE = 1e-12  # keeps whitening finite for (numerically) empty directions


@dataclass(frozen=True)
class KLT:
    """Statistics of wavelet packet coefficient vectors, eigenvalues in descending order."""

    mean: Tensor  # (D,) float64
    eigvals: Tensor  # (D,) float64, descending
    eigvecs: Tensor  # (D, D) float64, columns are eigenvectors
    count: int  # vectors seen

    def energy_fraction(self, k: int) -> float:
        """Share of the (centered) coefficient variance kept by k components."""
        return float(self.eigvals[:k].sum() / self.eigvals.sum())


def coefficient_vectors(codec: WaLLoC, x: Tensor) -> Tensor:
    """(B, C, ...) signals -> (positions, D) wavelet packet coefficient vectors."""
    X = codec.analysis(x)  # (B, D, h, w) or (B, D, l)
    return X.flatten(2).transpose(1, 2).reshape(-1, X.shape[1])


@torch.no_grad()
def fit_klt(codec: WaLLoC, batches: Iterable[Tensor]) -> KLT:
    """Mean, covariance and eigendecomposition of the codec's wavelet packet coefficients (float64)."""
    total, outer, count = None, None, 0
    for x in batches:
        v = coefficient_vectors(codec, x.float()).double()
        total = v.sum(0) if total is None else total + v.sum(0)
        outer = v.T @ v if outer is None else outer + v.T @ v
        count += v.shape[0]
    if total is None or count < 2:
        raise ValueError("fit_klt needs at least one batch with two positions")
    mean = total / count
    cov = outer / count - torch.outer(mean, mean)
    eigvals, eigvecs = torch.linalg.eigh((cov + cov.T) / 2)
    order = torch.argsort(eigvals, descending=True)
    return KLT(mean=mean, eigvals=eigvals[order].clamp_min(0), eigvecs=eigvecs[:, order], count=count)


def encoder_weights(klt: KLT, k: int, scale: float) -> tuple[Tensor, Tensor]:
    """(W (k, D), b (k,)) of the whitening encoder y = W X + b."""
    lam = klt.eigvals[:k].clamp_min(MIN_EIGENVALUE)
    W = scale * lam.rsqrt()[:, None] * klt.eigvecs[:, :k].T
    return W, -W @ klt.mean


def decoder_weights(klt: KLT, k: int, scale: float) -> tuple[Tensor, Tensor]:
    """(W (D, k), b (D,)) of the decoder X_hat = W y + b (the encoder's pseudo-inverse)."""
    lam = klt.eigvals[:k].clamp_min(MIN_EIGENVALUE)
    return klt.eigvecs[:, :k] * (lam.sqrt() / scale)[None, :], klt.mean.clone()


@torch.no_grad()
def init_encoder_from_klt(codec: WaLLoC, klt: KLT) -> WaLLoC:
    """Load the whitening KLT encoder into a codec's 1x1 (lightweight) encoder, in place."""
    if not codec.config.lightweight_encode:
        raise ValueError("KLT initialisation needs the 1x1 (lightweight) encoder")
    W, b = encoder_weights(klt, codec.config.latent_dim, codec.compander.scale)
    enc = codec.encoder
    enc.weight.copy_(W.reshape(enc.weight.shape).to(enc.weight))
    enc.bias.copy_(b.to(enc.bias))
    return codec


@torch.no_grad()
def klt_codec(config: CodecConfig, klt: KLT) -> WaLLoC:
    """A linear codec (1x1 encoder, 1x1 decoder) from a fitted KLT; config's decoder is forced to linear."""
    config = replace(config, decoder="linear", lightweight_encode=True, Ne=None)
    codec = init_encoder_from_klt(build(config), klt)
    W, b = decoder_weights(klt, config.latent_dim, codec.compander.scale)
    dec = codec.decoder
    weight = torch.zeros_like(dec.weight)
    if config.kind == "2d":
        weight[:, :, 0, 0] = W
    else:  # kernel 3 over the L+2 latent frames: the centre tap lines up with frame t
        weight[:, :, 1] = W
    dec.weight.copy_(weight)
    dec.bias.copy_(b.to(dec.bias))
    return codec.eval()
