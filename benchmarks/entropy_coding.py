"""Size and speed of each latent storage method (context, zstd, png, webp, raw) on real images.

    python benchmarks/entropy_coding.py [--codec rgb-16x-klt] [--images DIR] [--size 256]
    python benchmarks/entropy_coding.py --heldout --root data/photos    # the codec's held-out photos

Each image is resized (shorter side) and center-cropped to --size (or, with --crop eval, cut as
jobs/evaluate_codec.py does: downscaled to <= 1024 px, centre crop of up to 512 x 512), encoded to
latents once, then stored and read back with every method; the table reports the mean stored
bytes per image (header included), bits per pixel, bits per latent value, the ratio to the raw
8-bit RGB input (3*H*W bytes) and the storage step's own time (not the codec's): the median of
--repeat runs per image (wall clock, or with --clock cpu the process's CPU time), as ms per
image and as MB/s of int8 latents (one byte per value).
--heldout takes the held-out files recorded in the codec's metadata (sha256-checked), found under
--root; files that are not there are listed and skipped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
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


def load_eval_image(path: Path) -> torch.Tensor:
    """(1, 3, h, w): the evaluation's crop (pipeline.training.evaluate.eval_image)."""
    from pipeline.training.evaluate import eval_image

    rgb = eval_image(path)
    return torch.from_numpy(rgb).permute(2, 0, 1).float().div(255).sub(0.5)[None].contiguous()


def heldout_files(codec, root: Path | None) -> tuple[list[Path], list[str]]:
    """(present and sha256-verified held-out files, names of the missing ones)."""
    split = codec.metadata.get("training", {}).get("data")
    if not split:
        raise SystemExit(f"codec {codec.name} records no training split")
    roots = [root] if root else [Path(r) for r in split["roots"]]
    found, missing = [], []
    for entry in split["valid"]["files"]:
        path = next((r / entry["name"] for r in roots if (r / entry["name"]).is_file()), None)
        if path is None or hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"][0]:
            missing.append(entry["name"])
        else:
            found.append(path)
    return found, missing


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--codec", default="rgb-16x-klt", help="bundled codec name or checkpoint path")
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of images")
    p.add_argument("--size", type=int, default=256, help="resize and center-crop to size x size")
    p.add_argument("--methods", default=",".join(sorted(entropy.METHODS)), help="comma-separated")
    p.add_argument("--limit", type=int, default=0, help="use at most this many images (0: all)")
    p.add_argument("--crop", choices=("fit", "eval"), default="fit", help="fit: --size square; eval: <=512")
    p.add_argument("--heldout", action="store_true", help="the codec's held-out files (implies --crop eval)")
    p.add_argument("--root", type=Path, default=None, help="--heldout: data root (default: as recorded)")
    p.add_argument("--repeat", type=int, default=3, help="timing: median of this many runs per image")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: perf_counter; cpu: this process's CPU time (steadier on a shared, loaded machine)",
    )
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
    if args.heldout:
        paths, missing = heldout_files(codec, args.root)
        args.crop = "eval"
        if missing:
            print(f"held-out files not found (skipped): {', '.join(missing)}")
    else:
        paths = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if args.limit:
        paths = paths[: args.limit]
    if not paths:
        print(f"no images in {args.images}", file=sys.stderr)
        return 1

    torch.set_num_threads(1)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    sizes: dict[str, list[int]] = {m: [] for m in methods}
    enc_s: dict[str, list[float]] = {m: [] for m in methods}
    dec_s: dict[str, list[float]] = {m: [] for m in methods}
    pixels, values, shapes = [], [], set()
    for path in paths:
        x = load_eval_image(path) if args.crop == "eval" else load_image(path, args.size)
        with torch.inference_mode():
            z = codec.encode(x)
        size = tuple(x.shape[-2:])
        pixels.append(size[0] * size[1])
        values.append(z.numel())
        shapes.add(tuple(z.shape))
        for method in methods:
            enc, dec = [], []
            for _ in range(max(1, args.repeat)):
                t0 = clock()
                data = codec.to_bytes(z, method=method, size=size)
                t1 = clock()
                z_back = codec.from_bytes(data)
                t2 = clock()
                enc.append(t1 - t0)
                dec.append(t2 - t1)
            if not torch.equal(z_back, z):
                print(f"{method}: round trip is not exact on {path.name}", file=sys.stderr)
                return 1
            sizes[method].append(len(data))
            enc_s[method].append(float(np.median(enc)))
            dec_s[method].append(float(np.median(dec)))

    crop = "evaluation crops (<= 512 px)" if args.crop == "eval" else f"{args.size}x{args.size}"
    print(
        f"codec {args.codec} (latent_bits={codec.config.latent_bits}, latents e.g. {sorted(shapes)[0]}), "
        f"{len(paths)} images, {crop}, mean {np.mean(pixels):.0f} pixels; {args.clock} clock, 1 thread"
    )
    print(
        f"{'method':<8}{'bytes':>10}{'bpp':>8}{'bits/val':>9}{'ratio':>8}"
        f"{'enc ms':>9}{'dec ms':>9}{'enc MB/s':>10}{'dec MB/s':>10}"
    )
    figures = {}
    total_pixels, total_values = float(np.sum(pixels)), float(np.sum(values))
    for method in methods:
        total = float(np.sum(sizes[method]))
        enc, dec = float(np.sum(enc_s[method])), float(np.sum(dec_s[method]))
        row = {
            "bytes_per_image": total / len(paths),
            "bpp": total * 8 / total_pixels,
            "bits_per_latent_value": total * 8 / total_values,
            "ratio_to_rgb": 3 * total_pixels / total,
            "encode_ms_per_image": enc * 1e3 / len(paths),
            "decode_ms_per_image": dec * 1e3 / len(paths),
            "encode_latent_MB_per_s": total_values / enc / 1e6,
            "decode_latent_MB_per_s": total_values / dec / 1e6,
        }
        figures[method] = row
        print(
            f"{method:<8}{row['bytes_per_image']:>10.1f}{row['bpp']:>8.4f}{row['bits_per_latent_value']:>9.3f}"
            f"{row['ratio_to_rgb']:>8.1f}{row['encode_ms_per_image']:>9.2f}{row['decode_ms_per_image']:>9.2f}"
            f"{row['encode_latent_MB_per_s']:>10.2f}{row['decode_latent_MB_per_s']:>10.2f}"
        )
    if args.json:
        files = [p.name for p in paths]
        report = {"codec": args.codec, "crop": crop, "clock": args.clock, "files": files, "methods": figures}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
