"""One network family for both input domains: a domain stem, then the same residual trunk.

    latents 12x32x32 --stem: 3x3 conv, stride 1--\
                                                  >-- 64 x 32x32 -> shared trunk -> task head
    pixels   3x64x64 --stem: 4x4 conv, stride 2--/

Both stems map their input (12,288 values either way) to the same width at 32x32, so trunk and
head cost the same in both arms; the arms differ only in what the values are (wavelet-packet
latents of the 256x256 image vs the image downsampled to 64x64). The three-arm jobs (classify,
colorize, documents) use cell_stem, which reaches the same 32x32 grid from latents and from pixels
at any resolution; dense outputs mirror it (cell_unstem).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

Domain = Literal["latent", "pixel"]


@dataclass(frozen=True)
class NetConfig:
    width: int = 32  # channels after the stem; stages use width, 2*width, 4*width
    blocks: int = 1  # residual blocks per stage


def stem(domain: Domain, in_channels: int, width: int) -> nn.Module:
    """Input -> width x 32x32: the only part (with its dense-head mirror) that depends on the domain."""
    if domain == "latent":
        conv = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
    elif domain == "pixel":
        conv = nn.Conv2d(in_channels, width, 4, stride=2, padding=1, bias=False)
    else:
        raise ValueError(f"domain must be 'latent' or 'pixel', got {domain!r}")
    return nn.Sequential(conv, nn.BatchNorm2d(width), nn.ReLU(inplace=True))


class Block(nn.Module):
    """Pre-activation-free basic residual block (ResNet-18 style), optional stride."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.skip = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + self.skip(x))


def stage(cin: int, cout: int, blocks: int, stride: int) -> nn.Sequential:
    return nn.Sequential(Block(cin, cout, stride), *[Block(cout, cout) for _ in range(blocks - 1)])


class Trunk(nn.Module):
    """32x32 -> 16x16 -> 8x8 residual stages; returns all three feature maps (for heads and U-Net skips)."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        w = cfg.width
        self.s1 = stage(w, w, cfg.blocks, 1)
        self.s2 = stage(w, 2 * w, cfg.blocks, 2)
        self.s3 = stage(2 * w, 4 * w, cfg.blocks, 2)
        self.out_channels = 4 * w

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        f1 = self.s1(x)
        f2 = self.s2(f1)
        return f1, f2, self.s3(f2)


class Classifier(nn.Module):
    """stem -> trunk -> global average pool -> linear (a small ResNet)."""

    def __init__(self, domain: Domain, in_channels: int, classes: int, cfg: NetConfig = NetConfig()):
        super().__init__()
        self.stem, self.trunk = stem(domain, in_channels, cfg.width), Trunk(cfg)
        self.head = nn.Linear(self.trunk.out_channels, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(self.stem(x))[2].mean(dim=(2, 3)))


class GridReader(nn.Module):
    """stem -> trunk -> 1x1 conv: class logits for each cell of the trunk's 8x8 output grid.

    A page laid out as an 8x8 grid of characters (32x32 pixels each at 256x256) puts one character
    on each output cell, so character recognition is per-cell classification (B, classes, 8, 8)."""

    def __init__(self, domain: Domain, in_channels: int, classes: int, cfg: NetConfig = NetConfig()):
        super().__init__()
        self.stem, self.trunk = stem(domain, in_channels, cfg.width), Trunk(cfg)
        self.head = nn.Conv2d(self.trunk.out_channels, classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(self.stem(x))[2])


class Translator(nn.Module):
    """cell_stem -> trunk as a small U-Net (8x8 context back to 32x32) -> cell_unstem; predicts a
    residual over the input (colour latents minus grey latents, or colour pixels minus grey pixels),
    so every arm starts from "output = input", its grey floor."""

    def __init__(self, in_channels: int, out_channels: int, cell: int, cfg: NetConfig = NetConfig()):
        super().__init__()
        w = cfg.width
        self.stem, self.trunk = cell_stem(in_channels, cell, w), Trunk(cfg)
        self.up3 = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(4 * w, 2 * w, 3, padding=1)
        )
        self.up2 = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(4 * w, w, 3, padding=1)
        )
        self.fuse = nn.Sequential(nn.Conv2d(2 * w, w, 3, padding=1), nn.ReLU(inplace=True))
        self.out = cell_unstem(w, out_channels, cell)
        nn.init.zeros_(self.out.weight)  # start from "output = input" (the grey image)
        nn.init.zeros_(self.out.bias)
        self.residual = in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        f1, f2, f3 = self.trunk(self.stem(x))
        u2 = torch.relu(self.up3(f3))
        u1 = torch.relu(self.up2(torch.cat([u2, f2], 1)))
        y = self.out(self.fuse(torch.cat([u1, f1], 1)))
        return x + y if self.residual else y


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def cell_stem(in_channels: int, cell: int, width: int) -> nn.Module:
    """Input -> width x (side / cell)^2 for inputs of any resolution, in two nonlinear embedding steps
    and a 3x3 conv: a (cell/2)-strided conv then a 2x2 stride-2 conv embed each grid cell (1x1 then
    2x2 on 64x64 pixels: cell 2; 4x4 then 2x2 on 256x256 pixels: cell 8), two 1x1 convs on latents
    (cell 1: channels mixed per position before anything looks across positions), so every input
    reaches the trunk's 32x32 grid through the same depth and width."""
    first = max(1, cell // 2)
    second = cell // first  # 1 (latents) or 2
    return nn.Sequential(
        nn.Conv2d(in_channels, width, first, stride=first, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, width, second, stride=second, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    )


def cell_unstem(width: int, out_channels: int, cell: int) -> nn.Module:
    """width x 32x32 -> out_channels x (32 cell)^2, the mirror of cell_stem for dense outputs: a 3x3
    conv on latents (cell 1), else a transposed conv of kernel 2 cell and stride cell, so neighbouring
    cells overlap by half and the output has no cell-sized blocks (64x64 pixels: 4x4, stride 2)."""
    if cell == 1:
        return nn.Conv2d(width, out_channels, 3, padding=1)
    return nn.ConvTranspose2d(width, out_channels, 2 * cell, stride=cell, padding=cell // 2)


class CellClassifier(nn.Module):
    """cell_stem -> trunk -> global average pool -> dropout -> linear: one classifier for latents and
    pixels at any resolution whose grid of cells is the trunk's 32x32 (classify's three arms)."""

    def __init__(
        self, in_channels: int, cell: int, classes: int, cfg: NetConfig = NetConfig(), dropout: float = 0.0
    ):
        super().__init__()
        self.stem, self.trunk = cell_stem(in_channels, cell, cfg.width), Trunk(cfg)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(self.trunk.out_channels, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.drop(self.trunk(self.stem(x))[2].mean(dim=(2, 3))))


class CellGridReader(nn.Module):
    """cell_stem -> trunk -> 1x1 conv: GridReader's per-cell logits (B, classes, 8, 8) for latents and
    pixels at any resolution whose grid of cells is the trunk's 32x32 (the documents job's three arms)."""

    def __init__(
        self, in_channels: int, cell: int, classes: int, cfg: NetConfig = NetConfig(), dropout: float = 0.0
    ):
        super().__init__()
        self.stem, self.trunk = cell_stem(in_channels, cell, cfg.width), Trunk(cfg)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Conv2d(self.trunk.out_channels, classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.drop(self.trunk(self.stem(x))[2]))
