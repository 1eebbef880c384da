#!/usr/bin/env python
"""Encode multi-band TIFF rasters (remote sensing band stacks, DEMs...) into WaLLoC latent shards.

Every band of a file is one codec channel: the band count must equal the codec's channels (a file
with another count becomes an error row). Values are scaled to [-0.5, 0.5] by a per-dtype rule --
uint8 /255, uint16 /65535, other integers by their dtype's range, floats by each image's min/max --
or by --range LO,HI for every file (clipped); the range used is in each sample's .json
(value_range), so values can be restored: v = (x + 0.5) * (hi - lo) + lo.

    python jobs/encode_raster.py --input data/eurosat-ms --codec path/to/13band.json --range 0,10000
Installed (pip install walloc-pipeline): the same flags as `walloc-encode-raster`.
"""

from __future__ import annotations

import argparse
import sys

from ..cli import (
    FlagError,
    JobArgumentParser,
    add_common_flags,
    add_geometry_flags,
    encode_config,
    image_settings,
    run_encode_job,
    validate_encode_args,
)
from ..config import RasterSettings


def parse_range(text: str) -> tuple[float, float]:
    """'LO,HI' -> (lo, hi), with lo < hi."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}; accepted: LO,HI (two numbers)") from None
    if not lo < hi:
        raise argparse.ArgumentTypeError(f"got {text!r}; accepted: LO,HI with LO < HI")
    return lo, hi


def validate(args: argparse.Namespace) -> None:
    if not args.codec:
        raise FlagError(
            "--codec", "required for rasters", "a 2-D codec whose channels equal the rasters' band count"
        )
    validate_encode_args(args, "raster")


def build_parser() -> argparse.ArgumentParser:
    parser = JobArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(parser, default_input="data/rasters", default_output="out/raster-wds", default_codec="")
    raster = parser.add_argument_group("rasters")
    add_geometry_flags(raster)
    raster.add_argument(
        "--range",
        type=parse_range,
        default=RasterSettings.value_range,
        metavar="LO,HI",
        help="clip values to [LO, HI] and scale that to [-0.5, 0.5] (default: the per-dtype rule)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_checked(argv, validate)
    cfg = encode_config(parser, args, image=image_settings(args), raster={"value_range": args.range})
    return run_encode_job(cfg, dry_run=args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
