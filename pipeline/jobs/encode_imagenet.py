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
    add_geometry_flags,
    encode_config,
    image_settings,
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
    add_geometry_flags(images)
    images.add_argument(
        "--extensions",
        type=parse_extensions,
        default=None,
        metavar=".EXT,...",
        help="the file extensions that are images (default: torchvision ImageFolder's .jpg .jpeg .png "
        ".ppm .bmp .pgm .tif .tiff .webp, and .gif); every other file is counted as skipped, by reason, "
        "in the summary and the manifest",
    )
    add_bucket_flags(images)
    return parser


def parse_extensions(text: str) -> list[str]:
    """'.jpg,PNG' -> ['.jpg', '.png']."""
    exts = ["." + e.strip().lower().lstrip(".") for e in text.split(",") if e.strip().lstrip(".")]
    if not exts:
        raise argparse.ArgumentTypeError(f"no extension in {text!r}")
    return exts


def validate(args: argparse.Namespace) -> None:
    """--extensions is the image sources' `extensions` option (checked against the source like any)."""
    if args.extensions:
        args.source_option = [*(args.source_option or []), ("extensions", args.extensions)]
    validate_encode_args(args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_checked(argv, validate)
    cfg = encode_config(parser, args, image=image_settings(args))
    return run_encode_job(cfg, dry_run=args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
