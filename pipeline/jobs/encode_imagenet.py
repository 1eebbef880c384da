#!/usr/bin/env python
"""Encode an image corpus into WaLLoC latent shards (WebDataset or Zarr) on Ray.

With no arguments it encodes the bundled sample photos with the bundled RGB codec on a local Ray
into ./out/samples-wds. On a cluster:
    ray job submit --working-dir . -- python jobs/encode_imagenet.py --input s3://bucket/imagenet/train \\
        --output s3://bucket/latents/imagenet-train --format webdataset --shard-size 1000
Installed (pip install walloc-pipeline): the same flags as `walloc-encode-images`.
"""

from __future__ import annotations

import argparse
import sys

from ..cli import (
    JobArgumentParser,
    add_bucket_flags,
    add_common_flags,
    encode_config,
    nonnegative_int,
    run_encode_job,
    validate_encode_args,
)
from ..config import DEFAULT_IMAGE_CODEC, DEFAULT_IMAGE_INPUT


def build_parser() -> argparse.ArgumentParser:
    """The job's flags (the deploy manifests' entrypoints are checked against it)."""
    parser = JobArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(
        parser,
        default_input=DEFAULT_IMAGE_INPUT,
        default_output="out/samples-wds",
        default_codec=DEFAULT_IMAGE_CODEC,
    )
    images = parser.add_argument_group("images")
    images.add_argument(
        "--size",
        type=nonnegative_int,
        default=256,
        help="target side (crop=center) or shorter side (crop=none); 0 keeps the original size",
    )
    images.add_argument(
        "--crop",
        choices=["center", "none"],
        default="center",
        help="center: resize the shorter side to --size and center-crop a square; "
        "none: keep the aspect ratio (padded to a multiple of 2^J by the codec)",
    )
    add_bucket_flags(images)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_checked(argv, validate_encode_args)
    cfg = encode_config(parser, args, size=args.size or None, crop=args.crop)
    return run_encode_job(cfg, dry_run=args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
