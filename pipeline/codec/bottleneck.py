"""Entropy bottleneck: Gaussian-CDF companding, then rounding (eval) or uniform noise (training).

The encoder is trained to emit roughly Gaussian latents with standard deviation `scale`; the
normal CDF maps them to a near-uniform variable on +-latent_max, which rounds to the integers
+-(2^(bits-1) - 1) with nearly equal probability (so a plain integer plane compresses well and
a uniform quantizer is close to optimal). Constants and operation order follow walloc 1.2.1
(ToUniform / Round / ToNormal) so that latents round identically.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

MIN_BITS, MAX_BITS = 2, 8


def check_bits(bits: int) -> None:
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"latent_bits must be in [{MIN_BITS}, {MAX_BITS}], got {bits}")


class Compander(nn.Module):
    """Maps encoder outputs to the quantizer's range and back (no parameters)."""

    def __init__(self, bits: int):
        super().__init__()
        check_bits(bits)
        self.bits = bits
        self.max_int = 2 ** (bits - 1) - 1  # latents are integers in [-max_int, max_int]
        self.scale = self.max_int / 1.85  # Gaussian std the encoder aims for
        self.latent_max = self.max_int + 0.5 - 1e-3  # keeps round() inside +-max_int
        # True: round in training too. For decoder-only training (frozen encoder) no gradient has to
        # cross the quantizer, and the decoder should learn from the integers it will be given; the
        # noise proxy gives it a noisy but unbiased view of y that rounding does not (measured: a
        # decoder trained on noise got worse than its init on rounded latents at coarse steps).
        self.round_in_training = False

    def to_uniform(self, x: Tensor) -> Tensor:
        """Gaussian -> uniform on (-latent_max, latent_max), as the reference computes it."""
        x = x / self.scale
        x = 0.5 * (1 + torch.erf(x / math.sqrt(2)))  # torch.distributions.Normal(0, 1).cdf
        return 2 * self.latent_max * (x - 0.5)

    def quantize(self, x: Tensor) -> Tensor:
        """Rounding at eval time, additive uniform noise (a differentiable proxy) in training."""
        if self.training and not self.round_in_training:
            return x + (torch.rand_like(x) - 0.5)
        return torch.round(x)

    def to_normal(self, x: Tensor) -> Tensor:
        """Inverse companding: integers (or noisy values) -> Gaussian-scaled decoder input."""
        x = x / (2 * self.latent_max) + 0.5
        x = x.clamp(0.0001, 0.9999)
        x = torch.erfinv(2 * x - 1) * math.sqrt(2)  # torch.distributions.Normal(0, 1).icdf
        return self.scale * x

    def forward(self, x: Tensor) -> Tensor:
        return self.quantize(self.to_uniform(x))
