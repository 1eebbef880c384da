"""Task metrics: accuracy, character accuracy, PSNR (from pipeline.training.metrics), colourfulness."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..training.metrics import psnr

__all__ = ["accuracy", "char_accuracy", "colourfulness", "psnr", "string_accuracy"]


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
