#!/usr/bin/env python
"""Colorization in the latent domain vs at 64x64 pixels (same input budget), with a report.

From colour photos (--images) the job writes 256x256 centre crops and their grey copies (luma,
replicated to RGB by the pipeline), encodes both with the pipeline (local Ray) into
<output>/latents, then trains two arms of the same network family:
    latent: latents of the grey image (12x32x32) -> latents of the colour image, decoded by the codec
    pixel:  grey 3x64x64 -> colour 3x64x64, upsampled (bicubic) to 256x256
Both are scored at full 256x256 against the colour crop: PSNR and Hasler-Suesstrunk colourfulness,
with training samples/s and peak memory. Writes report.md, report.json, curves.png, samples.png.

Examples:
    python jobs/learn_colorize.py                                     # CPU, a few minutes
    python jobs/learn_colorize.py --device cuda --epochs 60 --samples 340 --width 64
"""

from __future__ import annotations

import argparse
import sys

from ..cli import JobArgumentParser, positive_int
from ..learning.cli import add_learning_flags, net_and_train, validate_learning_args


def build_parser() -> argparse.ArgumentParser:
    p = JobArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", default="data/imagenet-mini", help="colour photos (default: %(default)s)")
    p.add_argument(
        "--latents", help="reuse the latents of a previous run of this job (its pairs/ must exist)"
    )
    p.add_argument(
        "--val-samples", type=positive_int, default=60, help="held-out images (default: %(default)s)"
    )
    add_learning_flags(p, output="out/learn-colorize", epochs=8, samples=240)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_checked(argv, lambda a: validate_learning_args(a, "--images"))
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
        net=net,
        train=train,
    )
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
