#!/usr/bin/env python
"""Reading small print on real PDF pages: grey latents vs 64x64 pixels vs 256x256 pixels, 3 seeds.

Renders 256x256 grey tiles of born-digital PDFs (scripts/fetch_documents.py: TeX Live and R manuals
from Debian) with PDFium into <output>/tiles, labels every 32x32 cell with the glyph nearest its
centre from the PDFs' text layer (38 classes), encodes the tiles with the pipeline (grey codec, local
Ray) into <output>/latents, and trains three arms of one network to read the cells: latents 4x32x32,
the tile at 1x64x64 (same size) and at 1x256x256 (the full-resolution ceiling), once per seed.
Reports glyph accuracy (text cells) and cell accuracy, mean and spread over seeds, training
samples/s and memory; writes report.md, report.json, seeds.json, curves.png, seeds.png.

Examples:
    python scripts/fetch_documents.py && python jobs/learn_documents.py        # CPU, ~15 min
    python jobs/learn_documents.py --latents out/learn-documents/latents --epochs 20
    python jobs/learn_documents.py --device cuda --samples 8000 --epochs 30 --width 64
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from ..cli import JobArgumentParser, positive_float, positive_int
from ..learning.cli import add_learning_flags, add_regularisation_flags, net_and_train, validate_learning_args


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct seeds >= 0, got {text!r}")
    return seeds


def build_parser() -> argparse.ArgumentParser:
    p = JobArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--documents",
        default="data/documents",
        help="<collection>/*.pdf, from scripts/fetch_documents.py (default: %(default)s)",
    )
    p.add_argument(
        "--latents", help="reuse the latents of a previous run of this job (its tiles/ must exist)"
    )
    p.add_argument(
        "--val-samples", type=positive_int, default=240, help="held-out tiles (default: %(default)s)"
    )
    p.add_argument(
        "--seeds",
        type=_seeds,
        default=(0, 1, 2),
        help="comma-separated seeds, one run of every arm each (default: 0,1,2; replaces --seed)",
    )
    p.add_argument(
        "--scale",
        type=positive_float,
        default=2.5,
        help="render scale, pixels per PDF point (default: %(default)s = 180 dpi)",
    )
    add_regularisation_flags(p, weight_decay=1e-4, dropout=0.0)
    # codec=None: the bundled grey codec (tiles are rendered grey)
    add_learning_flags(p, output="out/learn-documents", epochs=12, samples=1200, codec=None)
    return p


def _validate(args: argparse.Namespace) -> None:
    validate_learning_args(args, data_flag="--documents")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_checked(argv, _validate)
    from ..learning.documents import DocumentsConfig, run

    net, train = net_and_train(args)
    cfg = DocumentsConfig(
        documents=args.documents,
        output=args.output,
        train_tiles=args.samples,
        val_tiles=args.val_samples,
        scale=args.scale,
        latents=args.latents,
        codec=args.codec,
        seeds=args.seeds,
        dropout=args.dropout,
        device=args.device,
        net=net,
        train=replace(train, weight_decay=args.weight_decay),
    )
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
