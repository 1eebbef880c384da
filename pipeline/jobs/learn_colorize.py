"""Colorization on latents vs 64x64 pixels vs 256x256 pixels (same U-Net, N seeds), with a report.

From colour photos (--images; default data/colour, from `scripts/fetch_data.py --steps colour`:
crops of real colour photographs and astrophotos, split by source image) the job writes 256x256
centre crops and their grey copies (luma, replicated to RGB by the pipeline), encodes both with the
pipeline (local Ray) into <output>/latents, then trains three arms of the same network:
    latent: latents of the grey image (12x32x32) -> latents of the colour image, decoded by the codec
    pixel:  grey 3x64x64 -> colour 3x64x64 (as many values as the latents), upsampled to 256x256
    full:   grey 3x256x256 -> colour 3x256x256 (16x the values: the ceiling)
All are scored at 256x256 against the colour crop: chroma PSNR (the colour alone; primary), PSNR,
colourfulness, each arm's grey floor and ceiling, train samples/s and memory, mean and spread over
--seeds. Writes report.md, report.json, curves.png, chroma_psnr.png, samples.png.

Examples:
    python scripts/fetch_data.py --steps colour       # once: data/colour (~250 MB download)
    python jobs/learn_colorize.py                       # CPU: 3 arms x 3 seeds
    python jobs/learn_colorize.py --latents out/learn-colorize/latents --arms latent pixel --seeds 1
    python jobs/learn_colorize.py --device cuda --epochs 40 --width 64
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from ..cli import FlagError, JobArgumentParser, check_input, positive_int
from ..learning.cli import (
    add_arm_flags,
    add_learning_flags,
    add_regularisation_flags,
    net_and_train,
    validate_learning_args,
)

EPOCHS = 5
DEFAULT_IMAGES = "data/colour"  # scripts/fetch_data.py --steps colour


def build_parser() -> argparse.ArgumentParser:
    p = JobArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--images",
        default=DEFAULT_IMAGES,
        help="colour photos: a folder with train/ and val/, or any image folder (split 80/20 at random) "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--latents", help="reuse the latents of a previous run of this job (its pairs/ must exist)"
    )
    p.add_argument(
        "--val-samples",
        type=positive_int,
        default=None,
        help="held-out images, a seeded choice (default: every image of val/, else 20%%)",
    )
    add_learning_flags(p, output="out/learn-colorize", epochs=EPOCHS)
    g = p.add_argument_group("the comparison")
    add_arm_flags(g)
    add_regularisation_flags(g, weight_decay=0.05)  # no dropout layer in the U-Net
    return p


def validate(args: argparse.Namespace) -> None:
    if args.latents is None and args.images == DEFAULT_IMAGES and not Path(DEFAULT_IMAGES).exists():
        raise FlagError(
            "--images", f"{DEFAULT_IMAGES} does not exist: fetch it with scripts/fetch_data.py --steps colour"
        )
    if args.latents is None:  # before the codec check, which imports torch
        check_input("--images", args.images)
        _check_image_counts(Path(args.images), args.samples, args.val_samples)
    validate_learning_args(args, "--images")


def _check_image_counts(root: Path, samples: int | None, val_samples: int | None) -> None:
    """Enough images for the split asked for (pipeline.learning.colorize.pick_images), before any work."""
    from ..sources.image_folder import IMAGE_EXTENSIONS

    def count(folder: Path) -> int:
        return sum(p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() for p in folder.rglob("*"))

    if (root / "train").is_dir() and (root / "val").is_dir():
        for split, flag, asked in (("train", "--samples", samples), ("val", "--val-samples", val_samples)):
            n = count(root / split)
            if n == 0 or (asked is not None and asked > n):
                raise FlagError(flag, f"{root / split} holds {n} images, {asked or 'at least 1'} needed")
        return
    n = count(root)
    n_val = val_samples if val_samples is not None else max(1, n // 5)
    n_train = samples if samples is not None else n - n_val
    if n_train < 1 or n < n_train + n_val:
        raise FlagError(
            "--images", f"{root} holds {n} images: too few for {max(n_train, 1)} train + {n_val} val"
        )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_checked(argv, validate)
    from ..learning.colorize import ColorizeConfig, run

    net, train = net_and_train(args)
    cfg = ColorizeConfig(
        output=args.output,
        images=args.images,
        latents=args.latents,
        codec=args.codec,
        samples=args.samples,
        val_samples=args.val_samples,
        device=args.device,
        arms=tuple(args.arms),
        seeds=args.seeds,
        net=net,
        train=replace(train, weight_decay=args.weight_decay),
    )
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
