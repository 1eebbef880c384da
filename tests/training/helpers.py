"""Synthetic training data for the training tests: smooth random images, deterministic per index."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.data import Dataset


def smooth_image(seed: int, size: int = 32, channels: int = 3) -> Tensor:
    """A few random low-frequency sinusoids per channel, correlated across channels, in [-0.5, 0.5]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    base = torch.zeros(size, size)
    for _ in range(4):
        fy, fx, phase = torch.rand(3, generator=g) * torch.tensor([0.3, 0.3, 2 * math.pi])
        base += torch.cos(fy * yy + fx * xx + phase)
    mix = 0.5 + 0.5 * torch.rand(channels, generator=g)
    img = mix.view(-1, 1, 1) * base / 4 + 0.05 * torch.randn(channels, size, size, generator=g)
    return img.clamp(-0.5, 0.5)


class SmoothImages(Dataset):
    def __init__(self, size: int = 32, offset: int = 0):
        self.size, self.offset = size, offset

    def __len__(self) -> int:
        return 1 << 30

    def __getitem__(self, index: int) -> Tensor:
        return smooth_image(self.offset + index, self.size)


def batch(n: int, size: int = 32, offset: int = 10**6) -> Tensor:
    return torch.stack([smooth_image(offset + i, size) for i in range(n)])
