#!/usr/bin/env python
"""Is a horizontal flip exact in the latent domain? And which latent crops/shifts are?

For each bundled image codec, on the bundled sample photos (center-cropped to --size) and on smooth
random images: fits the best latent flip (mirror of the latent W axis + channel permutation with
signs + shift; pipeline.codec.flip) and prints
  - the int8 mismatch rate of flip(encode(x)) against encode(mirror(x)) and their mean |difference|,
  - PSNR against the true mirrored image of decode(flip(z)) (flip in the latent domain),
    mirror(decode(z)) (flip after decoding) and decode(encode(mirror(x))) (what --flip-pair stores),
  - latent crops vs the encode of the matching 2^J-aligned pixel crop, by distance from the crop
    border (periodization wraps at the crop border), and a circular shift by 2^J pixels.
Run: .venv/bin/python benchmarks/flip_exactness.py [--size 256] [--codecs rgb-16x-klt,rgb-16x]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.codec import load  # noqa: E402
from pipeline.codec.flip import fit_latent_flip, mirror, probe_images  # noqa: E402
from pipeline.config import SAMPLES_DIR  # noqa: E402
from pipeline.preprocess.image import ImagePolicy, decode_image, to_codec_input  # noqa: E402


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-0.5, 0.5] (peak 1), averaged over images."""
    mse = ((a.double() - b.double()) ** 2).flatten(1).mean(1)
    return float((10 * torch.log10(1.0 / mse.clamp_min(1e-12))).mean())


def photos(size: int) -> torch.Tensor:
    policy = ImagePolicy(size=size, crop="center", channels=3, multiple=8)
    paths = sorted((SAMPLES_DIR / "images").rglob("*.JPEG"))
    arrays = [to_codec_input(decode_image(p.read_bytes(), policy).array) for p in paths]
    return torch.from_numpy(np.stack(arrays))


def flip_figures(codec, x: torch.Tensor, flip) -> dict[str, float]:
    z, z_m = codec.encode(x), codec.encode(mirror(x))
    z_f = flip(z)
    diff = (z_f.to(torch.int16) - z_m.to(torch.int16)).abs().float()
    return {
        "mismatch": float((diff > 0).float().mean()),
        "mean_abs": float(diff.mean()),
        "psnr_latent_flip": psnr(codec.decode(z_f), mirror(x)),
        "psnr_pixel_flip": psnr(mirror(codec.decode(z)), mirror(x)),
        "psnr_flip_pair": psnr(codec.decode(z_m), mirror(x)),
    }


def crop_figures(codec, x: torch.Tensor, crop: int, rings: int = 4) -> tuple[list[float], float]:
    """Mismatch of latent crops vs encode(pixel crop), by ring (distance from the crop border)."""
    b = codec.config.block
    z = codec.encode(x)
    h, w = z.shape[-2:]
    counts, wrong = np.zeros(rings + 1), np.zeros(rings + 1)
    for top, left in ((1, 2), (h - crop - 3, 1), ((h - crop) // 2, (w - crop) // 2)):
        zc = codec.encode(x[..., top * b : (top + crop) * b, left * b : (left + crop) * b])
        bad = (zc != z[..., top : top + crop, left : left + crop]).any(1).float()  # (B, crop, crop)
        i = torch.arange(crop)
        edge = torch.minimum(i, crop - 1 - i)  # distance from the nearer border, per axis
        dist = torch.minimum(edge[:, None], edge[None, :])
        ring = dist.clamp_max(rings)
        for r in range(rings + 1):
            sel = ring == r
            counts[r] += float(sel.sum()) * len(x)
            wrong[r] += float(bad[:, sel].sum())
    rolled = codec.encode(torch.roll(x, (2 * b, 3 * b), dims=(-2, -1)))
    roll_mismatch = float((rolled != torch.roll(z, (2, 3), dims=(-2, -1))).float().mean())
    return list(wrong / counts), roll_mismatch


def transform_bands(levels: int, size: int = 64) -> dict[int, int]:
    """Pixel shift r of the mirror -> bands (of 4^J) whose coefficients, after mirroring x and rolling
    it by r pixels, equal some band's mirrored coefficients up to a latent shift and a sign."""
    from pipeline.codec import wavelets

    x = torch.randn(1, 1, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = wavelets.analysis_2d(x, levels)[0]
    candidates = torch.stack([torch.roll(y.flip(-1), s, -1) for s in range(-4, 5)])  # (shift, band, h, w)
    out = {}
    for r in range(2):
        target = wavelets.analysis_2d(torch.roll(mirror(x), r, -1), levels)[0]
        exact = 0
        for band in target:
            err = torch.minimum((candidates - band).abs(), (candidates + band).abs()).amax((-1, -2)).min()
            exact += int(err < 1e-9)
        out[r] = exact
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256, help="side of the center-cropped photos")
    parser.add_argument("--codecs", default="rgb-16x-klt,rgb-16x", help="comma-separated codec names/paths")
    parser.add_argument("--crop", type=int, default=16, help="latent crop side (positions)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    sets = {"photos": photos(args.size), "random": probe_images(3, size=args.size, count=8, seed=1)}
    n_photos, n_random = len(sets["photos"]), len(sets["random"])
    print(f"images: {n_photos} sample photos and {n_random} smooth random, {args.size} px")
    bands = transform_bands(3)
    print(
        f"wavelet packet transform alone (J=3, {4**3} bands per channel): bands whose coefficients of the "
        f"mirrored image are a mirrored+shifted (+-) band of the original: {bands[0]}; of the mirror "
        f"rolled by 1 pixel (mirror about a pixel): {bands[1]}"
    )
    for name in args.codecs.split(","):
        codec = load(name).freeze()
        flip, err = fit_latent_flip(codec, sets["photos"])
        print(f"\n{name}: best latent flip perm={list(flip.perm)} sign={list(flip.sign)} shift={flip.shift}")
        print(f"  continuous latents: max |flip(y) - y(mirror)| / max |y| = {err:.3f}  (0 would be exact)")
        for set_name, x in sets.items():
            f = flip_figures(codec, x, flip)
            print(
                f"  {set_name:7s} int8 mismatch {100 * f['mismatch']:.1f}%  mean |diff| {f['mean_abs']:.2f}  "
                f"PSNR vs mirrored image: latent flip {f['psnr_latent_flip']:.2f} dB, pixel flip "
                f"{f['psnr_pixel_flip']:.2f} dB, --flip-pair {f['psnr_flip_pair']:.2f} dB"
            )
        rings, roll = crop_figures(codec, sets["photos"], args.crop)
        ring_text = ", ".join(f"{r}: {100 * v:.1f}%" for r, v in enumerate(rings[:-1]))
        print(
            f"  latent crop {args.crop}x{args.crop} vs encode(pixel crop), positions mismatched by distance "
            f"from the crop border: {ring_text}, >={len(rings) - 1}: {100 * rings[-1]:.1f}%"
        )
        print(f"  circular shift by 2^J pixels vs latent roll: {100 * roll:.3f}% mismatched")
    return 0


if __name__ == "__main__":
    sys.exit(main())
