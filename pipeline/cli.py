"""Flags shared by the encode jobs (one definition, so every job explains them the same way)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .config import ConfigurationError, EncodeConfig
from .registry import SINKS, SOURCES
from .sinks import base as _sinks  # noqa: F401  (registers sinks)
from .sources import detect_source as _detect  # noqa: F401  (registers sources)


def add_common_flags(
    parser: argparse.ArgumentParser, *, default_input: str, default_output: str, default_codec: str
) -> None:
    io = parser.add_argument_group("input and output")
    io.add_argument(
        "--input",
        default=default_input,
        help="input folder, tar shards, HF dataset dir or parquet files (path or fsspec URL); "
        f"default: the bundled samples ({default_input})",
    )
    io.add_argument(
        "--source",
        default="auto",
        choices=["auto", *sorted(SOURCES)],
        help="input kind (default: detected from the input)",
    )
    io.add_argument(
        "--source-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=parse_source_option,
        help="an option of the source, repeatable; VALUE is JSON when it parses, else a string. "
        'hf: split=validation, image_column=img, label_column=fine_label ("" for none); '
        'musdb: split=test, stems=\'["mixture","vocals"]\'; image-folder/raster/audio-folder: labels=none',
    )
    io.add_argument(
        "--output", default=default_output, help="output root: local path or fsspec URL (s3://...)"
    )
    io.add_argument(
        "--format",
        default="webdataset",
        choices=sorted(SINKS),
        help="webdataset: tar shards readable by stock webdataset; zarr: one v3 store (fixed size)",
    )
    io.add_argument(
        "--latent-format",
        default="npy",
        help="npy: int8 .npy per sample; zstd/png/webp: entropy-coded latents (.latent.wlat)",
    )
    io.add_argument(
        "--shard-size", type=int, default=256, help="samples per shard (unit of work and of resume)"
    )
    io.add_argument(
        "--mode",
        default="resume",
        choices=["overwrite", "resume", "append"],
        help="resume: continue an interrupted run, refuse changed inputs/settings; "
        "append: encode only inputs not yet in the output, and again those whose source changed (size, "
        "mtime or ETag; the old entry is listed as superseded in the manifest); overwrite: start again",
    )
    io.add_argument("--limit", type=int, default=None, help="encode only the first N inputs of the listing")
    codec = parser.add_argument_group("codec")
    codec.add_argument(
        "--codec", default=default_codec, help="bundled codec name or path (.json/.safetensors/.pth)"
    )
    codec.add_argument("--batch-size", type=int, default=64, help="at most this many samples per codec call")
    codec.add_argument(
        "--batch-pixels",
        type=int,
        default=EncodeConfig.batch_pixels,
        help="at most this many input values (channels x pixels, or x audio samples) per codec call, so "
        "large images go in smaller batches (default: 64 RGB images of 256x256); a batch that runs out "
        "of memory is retried in halves, down to one sample",
    )
    ray = parser.add_argument_group("ray")
    ray.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    ray.add_argument(
        "--workers", type=int, default=None, help="encoder actors (default: one per CPU, or per GPU)"
    )
    ray.add_argument(
        "--num-gpus-per-worker",
        type=float,
        default=0.0,
        help="GPUs per encoder actor; decoding stays on CPUs unless --decode gpu (0: encode on CPUs)",
    )
    ray.add_argument(
        "--decode",
        choices=["cpu", "gpu"],
        default="cpu",
        help="cpu: Pillow decodes and resizes on the CPUs (default); gpu: JPEG bytes go to the encoder "
        "actors, which decode (nvJPEG, batched), resize and encode on their GPU (1 GPU per actor unless "
        "--num-gpus-per-worker); other inputs fall back to the CPU path per sample, counted. Needs a GPU "
        "and torchvision; the latents differ slightly from --decode cpu (docs/gpu.md)",
    )
    ray.add_argument(
        "--sample-timeout",
        type=float,
        default=60.0,
        help="seconds one input may take to read and decode before it becomes an error row",
    )
    ray.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (inputs, shards to encode/skip per --mode, encoder workers and devices, "
        "expected output size) and exit without encoding or writing; exit 1 if the run would be refused",
    )


def add_bucket_flags(group: argparse._ArgumentGroup) -> None:
    """--buckets and --flip-pair (images): variable aspect ratios and mirrored latents."""
    group.add_argument(
        "--buckets",
        default=None,
        metavar="SPEC",
        help="aspect-ratio buckets instead of one square size: a list of W x H codec input sizes "
        "(e.g. 256x256,320x192,192x320; sides multiples of 2^J) or area=PIXELS:ratios=W:H,... "
        "(e.g. area=65536:ratios=1:1,4:3,3:4,16:9,9:16; sides derived as multiples of 2^J). Each image "
        "is resized to cover the bucket nearest its aspect ratio and center-cropped; WebDataset writes "
        "one tar per bucket per shard (shard-000012-b320x192.tar), Zarr one array per bucket "
        "(docs/buckets.md)",
    )
    group.add_argument(
        "--flip-pair",
        action="store_true",
        help="also encode the horizontally mirrored input and store its latent (<key>.latent_flip.npy, "
        "Zarr latents_flip) so training can flip per epoch. Needed for every bundled codec: flipping "
        "the latent itself is not exact for them (measured in docs/flips.md)",
    )


def parse_source_option(text: str) -> tuple[str, Any]:
    """'key=value' -> (key, value): JSON values (numbers, lists, "") when they parse, else the string."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"--source-option takes KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def config_from_args(args: argparse.Namespace, **extra: Any) -> EncodeConfig:
    return EncodeConfig(
        input=args.input,
        output=args.output,
        source=args.source,
        source_options=dict(getattr(args, "source_option", None) or []),
        format=args.format,
        codec=args.codec,
        latent_format=args.latent_format,
        shard_size=args.shard_size,
        mode=args.mode,
        limit=args.limit,
        address=args.address,
        workers=args.workers,
        num_gpus_per_worker=args.num_gpus_per_worker,
        batch_size=args.batch_size,
        batch_pixels=args.batch_pixels,
        sample_timeout_s=args.sample_timeout,
        progress=not args.no_progress,
        decode=getattr(args, "decode", "cpu"),
        **_bucket_settings(args),
        **extra,
    )


def _bucket_settings(args: argparse.Namespace) -> dict[str, Any]:
    """--buckets / --flip-pair when the job has them (only the image job does)."""
    out: dict[str, Any] = {}
    if getattr(args, "buckets", None):
        out["buckets"] = args.buckets
    if getattr(args, "flip_pair", False):
        out["flip_pair"] = True
    return out


def run_encode_job(cfg: EncodeConfig, *, dry_run: bool = False) -> int:
    """What every encode job does after parsing: run (or --dry-run: print the plan, write nothing),
    print the summary, exit code (1: failed shards).

    Errors the user fixes with a flag or another output (no GPU for --decode gpu, an output holding
    another run, an output another run is writing) are one line on stderr and exit code 2, not a
    traceback; nothing was written. Anything else is a bug and keeps its traceback."""
    from .runtime import OutputConflictError, run_encode
    from .runtime.lease import LeaseHeldError

    if dry_run:
        from .runtime.dry_run import dry_run_main

        return dry_run_main(cfg)
    try:
        summary = run_encode(cfg)
    except (ConfigurationError, OutputConflictError, LeaseHeldError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary.format())
    return 1 if summary.failed_shards else 0
