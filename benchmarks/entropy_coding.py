"""Size and speed of each latent storage method (zstd, png, webp, raw) on real images.

    python benchmarks/entropy_coding.py [--codec rgb-16x-klt] [--images DIR] [--size 256]

Each image is resized (shorter side) and center-cropped to --size, encoded to latents once, then
stored and read back with every method; the table reports the mean stored bytes per image (header
included), bits per pixel, the ratio to the raw 8-bit RGB input (3*H*W bytes) and the mean
encode/decode time of the storage step alone (not the codec).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

import pipeline
from pipeline.codec import entropy, load

DEFAULT_IMAGES = Path(pipeline.__file__).parent / "samples" / "images"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def load_image(path: Path, size: int) -> torch.Tensor:
    """(1, 3, size, size) float in [-0.5, 0.5], as the codec expects."""
    with Image.open(path) as image:
        image = ImageOps.fit(image.convert("RGB"), (size, size), method=Image.Resampling.BICUBIC)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255 - 0.5)
    return x.permute(2, 0, 1).unsqueeze(0).contiguous()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--codec", default="rgb-16x-klt", help="bundled codec name or checkpoint path")
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of images")
    p.add_argument("--size", type=int, default=256, help="resize and center-crop to size x size")
    p.add_argument("--methods", default=",".join(sorted(entropy.METHODS)), help="comma-separated")
    p.add_argument("--limit", type=int, default=0, help="use at most this many images (0: all)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in entropy.METHODS]
    if unknown:
        print(f"unknown method(s) {unknown}; known: {sorted(entropy.METHODS)}", file=sys.stderr)
        return 2
    try:
        codec = load(args.codec)
    except Exception as e:  # any failure here means "no usable codec": say which and why
        print(f"could not load codec {args.codec!r}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if codec.config.kind != "2d" or codec.config.channels != 3:
        print(f"codec {args.codec!r} is not an RGB image codec ({codec.config})", file=sys.stderr)
        return 1
    paths = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if args.limit:
        paths = paths[: args.limit]
    if not paths:
        print(f"no images in {args.images}", file=sys.stderr)
        return 1

    H = W = args.size
    raw_input_bytes = 3 * H * W
    sizes: dict[str, list[int]] = {m: [] for m in methods}
    enc_ms: dict[str, list[float]] = {m: [] for m in methods}
    dec_ms: dict[str, list[float]] = {m: [] for m in methods}
    latent_shape: tuple[int, ...] = ()
    for path in paths:
        with torch.inference_mode():
            z = codec.encode(load_image(path, args.size))
        latent_shape = tuple(z.shape)
        for method in methods:
            t0 = time.perf_counter()
            data = codec.to_bytes(z, method=method, size=(H, W))
            t1 = time.perf_counter()
            z_back = codec.from_bytes(data)
            t2 = time.perf_counter()
            if not torch.equal(z_back, z):
                print(f"{method}: round trip is not exact on {path.name}", file=sys.stderr)
                return 1
            sizes[method].append(len(data))
            enc_ms[method].append((t1 - t0) * 1e3)
            dec_ms[method].append((t2 - t1) * 1e3)

    print(
        f"codec {args.codec} (latent_bits={codec.config.latent_bits}, latents {latent_shape}), "
        f"{len(paths)} images at {H}x{W}, raw input {raw_input_bytes} bytes"
    )
    print(f"{'method':<8}{'bytes':>10}{'bpp':>9}{'ratio':>9}{'enc ms':>10}{'dec ms':>10}")
    for method in methods:
        mean_bytes = float(np.mean(sizes[method]))
        bpp, ratio = mean_bytes * 8 / (H * W), raw_input_bytes / mean_bytes
        enc, dec = float(np.mean(enc_ms[method])), float(np.mean(dec_ms[method]))
        print(f"{method:<8}{mean_bytes:>10.1f}{bpp:>9.4f}{ratio:>9.1f}{enc:>10.2f}{dec:>10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
