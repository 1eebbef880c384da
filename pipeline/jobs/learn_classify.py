#!/usr/bin/env python
"""Image classification on WaLLoC latents vs pixels at the same input budget, and vs full resolution.

Three arms over --seeds seeds: the codec's latents of the 256x256 image (grey: 4x32x32, RGB:
12x32x32), the image at 64x64 (as many values) and at 256x256 (the ceiling); the same trunk,
head, regularisation and exact augmentation (flip pairs, whole-position shifts) for every arm.
Prints accuracy per seed and its mean and spread, training samples/s and memory, and writes
report.md, report.json, curves.png, accuracy.png and samples.png into --output.

Data: --images (ImageNet layout: train/<class>/*, val/<class>/*; encoded by the pipeline into
<output>/latents first, on a local Ray, with the codec for the images' channels) or --latents (an
existing WebDataset run whose source images are still on disk, for the pixel arms). The default,
data/elpv-binary from scripts/fetch_elpv.py, is 2,624 real electroluminescence photos of solar
cells labelled defective or not (data/elpv: the 4 defect levels).

Examples:
    python scripts/fetch_elpv.py && python jobs/learn_classify.py     # CPU
    python jobs/learn_classify.py --device cuda --epochs 40 --width 64 --blocks 2
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from ..cli import FlagError, JobArgumentParser, nonnegative_int
from ..learning.cli import (
    add_arm_flags,
    add_learning_flags,
    add_regularisation_flags,
    net_and_train,
    validate_learning_args,
)

EPOCHS = 8
DEFAULT_IMAGES = "data/elpv-binary"  # scripts/fetch_elpv.py: defective (p >= 0.5) or not; data/elpv: 4 levels


def build_parser() -> argparse.ArgumentParser:
    p = JobArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--images",
        default=DEFAULT_IMAGES,
        help="image folder to encode (default: %(default)s, from scripts/fetch_elpv.py; data/elpv: the "
        "4-level task)",
    )
    p.add_argument("--latents", help="train from this existing pipeline run (WebDataset) instead of --images")
    add_learning_flags(p, output="out/learn-classify", epochs=EPOCHS, codec=None)  # by the images' channels
    g = p.add_argument_group("the comparison")
    add_arm_flags(g)
    add_regularisation_flags(g, weight_decay=0.05, dropout=0.2)
    g.add_argument(
        "--roll",
        type=nonnegative_int,
        default=4,
        help="augmentation: circular shifts up to this many latent positions (8 px at 256) per axis; 0: none "
        "(default: %(default)s)",
    )
    g.add_argument("--no-flip", action="store_true", help="no horizontal flips (then no --flip-pair latents)")
    return p


def validate(args: argparse.Namespace) -> None:
    if args.latents is None and args.images == DEFAULT_IMAGES and not Path(DEFAULT_IMAGES).exists():
        raise FlagError("--images", f"{DEFAULT_IMAGES} does not exist: fetch it with scripts/fetch_elpv.py")
    validate_learning_args(args, "--images")
    manifest = Path(args.latents or "", "manifest.json")
    flips = args.latents and manifest.is_file() and json.loads(manifest.read_text())["run"].get("flip_pair")
    if args.latents and not args.no_flip and not flips:
        raise FlagError(
            "--latents", f"{args.latents} holds no flip pairs (encode with --flip-pair, or --no-flip)"
        )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_checked(argv, validate)
    from ..learning.classify import Augment, ClassifyConfig, run

    net, train = net_and_train(args)
    run(
        ClassifyConfig(
            arms=tuple(args.arms),
            seeds=args.seeds,
            dropout=args.dropout,
            augment=Augment(flip=not args.no_flip, roll=args.roll),
            output=args.output,
            images=args.images,
            latents=args.latents,
            codec=args.codec,
            samples=args.samples,
            device=args.device,
            net=net,
            train=replace(train, weight_decay=args.weight_decay),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
