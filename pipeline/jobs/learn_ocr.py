#!/usr/bin/env python
"""Character recognition on document-like pages, latents vs pixels at the same budget, with a report.

Renders synthetic pages (random characters A-Z, 0-9 on an 8x8 grid, in the fonts installed on
this machine per fc-list, on paper-like backgrounds) as 256x256 PNGs into <output>/pages, encodes
them with the pipeline (local Ray) into <output>/latents, and trains two arms of the same network
family to read every cell: latents 12x32x32 vs the page at 3x64x64. Reports character accuracy,
line accuracy, training samples/s and peak memory; writes report.md, report.json, curves.png,
samples.png. The text is synthetic: say so wherever the figures are quoted.

Examples:
    python jobs/learn_ocr.py                                          # CPU, a few minutes
    python jobs/learn_ocr.py --device cuda --samples 4000 --epochs 30 --width 64
"""

from __future__ import annotations

import argparse
import sys

from ..cli import JobArgumentParser, positive_int
from ..learning.cli import add_learning_flags, net_and_train, validate_learning_args


def build_parser() -> argparse.ArgumentParser:
    p = JobArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--latents", help="reuse the latents of a previous run of this job (its pages/ must exist)"
    )
    p.add_argument(
        "--val-samples", type=positive_int, default=64, help="held-out pages (default: %(default)s)"
    )
    # codec=None: the bundled codec for the pages' channels
    add_learning_flags(p, output="out/learn-ocr", epochs=10, samples=320, codec=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_checked(argv, validate_learning_args)
    from ..learning.ocr import OcrConfig, run

    net, train = net_and_train(args)
    cfg = OcrConfig(
        output=args.output,
        pages=args.samples,
        val_pages=args.val_samples,
        latents=args.latents,
        codec=args.codec,
        device=args.device,
        net=net,
        train=train,
    )
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
