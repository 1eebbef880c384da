"""Flags shared by the jobs (one definition, so every job explains and checks them the same way).

A user's mistake in a flag is one line on stderr, `error: --flag: what is wrong; accepted: ...`, and
exit code 2, before Ray starts or anything is written (JobArgumentParser, the `type=` checks below and
each job's `validate`). Anything else that goes wrong is a bug and keeps its traceback."""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from .config import (
    CROPS,
    DECODE_DEVICES,
    MODES,
    AudioSettings,
    ConfigurationError,
    EncodeConfig,
    ImageSettings,
    RasterSettings,
    RayConfig,
)
from .registry import SINKS, SOURCES
from .sinks.base import LATENT_NPY, SinkSpec
from .sources import detect_source as _detect  # noqa: F401  (registers sources)

# Every default below is the config's (pipeline/config.py, SinkSpec): written once, there.


class FlagError(ValueError):
    """A flag's value the job cannot run with: which flag, what is wrong, what it accepts."""

    def __init__(self, flag: str, problem: str, accepted: str | None = None):
        self.flag, self.problem, self.accepted = flag, problem, accepted
        super().__init__(f"{flag}: {problem}" + (f"; accepted: {accepted}" if accepted else ""))


class JobArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line on stderr (`error: --flag: ...`) and exit 2,
    not the usage block: the line is what a log or a CI summary shows."""

    def error(self, message: str) -> NoReturn:
        text = _one_line(message)
        hint = "" if "; accepted: " in text else f" (see {self.prog} --help)"
        self.exit(2, f"error: {text}{hint}\n")

    def parse_checked(self, argv: list[str] | None, validate: Callable[[argparse.Namespace], None] | None):
        """parse_args, then the job's cross-flag and file checks; a FlagError exits as above."""
        args = self.parse_args(argv)
        if validate is not None:
            try:
                validate(args)
            except FlagError as err:
                self.error(str(err))
        return args


def _one_line(message: str) -> str:
    """argparse's wording, in ours: 'argument --x: invalid choice: 'a' (choose from 'b', 'c')' ->
    '--x: got 'a'; accepted: b, c'."""
    text = " ".join(message.split())
    text = re.sub(r"^argument ([^:]*/)?(--?[\w-]+): ", r"\2: ", text)
    choice = re.match(r"^(--?[\w-]+): invalid choice: (.+?) \(choose from (.+)\)$", text)
    if choice:
        accepted = ", ".join(c.strip().strip("'") for c in choice.group(3).split(","))
        text = f"{choice.group(1)}: got {choice.group(2)}; accepted: {accepted}"
    return text


def _number(kind: Callable[[str], Any], text: str, accepted: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}; accepted: {accepted}") from None


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse `type=`: a whole number >= low (and <= high)."""
    accepted = f"a whole number >= {low}" if high is None else f"a whole number from {low} to {high}"

    def check(text: str) -> int:
        value = _number(int, text, accepted)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"got {value}; accepted: {accepted}")
        return value

    check.__name__ = "whole_number"
    return check


def float_range(low: float, high: float | None = None, *, low_open: bool = False, high_open: bool = False):
    """An argparse `type=`: a finite number in [low, high] (open ends where asked)."""
    lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
    accepted = f"a number > {low:g}" if low_open else f"a number >= {low:g}"
    if high is not None:
        accepted = f"a number in {lo}{low:g}, {high:g}{hi}"

    def check(text: str) -> float:
        value = _number(float, text, accepted)
        bad = not math.isfinite(value)
        bad = bad or value < low or (low_open and value == low)
        if high is not None:
            bad = bad or value > high or (high_open and value == high)
        if bad:
            raise argparse.ArgumentTypeError(f"got {text}; accepted: {accepted}")
        return value

    check.__name__ = "number"
    return check


positive_int = int_range(1)
nonnegative_int = int_range(0)
positive_float = float_range(0.0, low_open=True)
nonnegative_float = float_range(0.0)


def latent_formats() -> list[str]:
    """npy + the entropy coding methods registered in pipeline/codec/entropy.py (their one home)."""
    from .codec.entropy import METHODS

    return [LATENT_NPY, *sorted(METHODS)]


def latent_format(text: str) -> str:
    """--latent-format: npy, or a registered entropy method (the codec package is imported only
    for a value other than npy)."""
    if text == LATENT_NPY:
        return text
    accepted = latent_formats()
    if text not in accepted:
        raise argparse.ArgumentTypeError(f"got {text!r}; accepted: {', '.join(accepted)}")
    return text


def is_url(path: str) -> bool:
    """An fsspec URL (s3://, gs://, hf://...): not checked here, the run reports what it finds."""
    return "://" in path and not path.startswith("file://")


def _local(path: str) -> Path:
    return Path(path[len("file://") :] if path.startswith("file://") else path).expanduser()


def _has_a_file(folder: Path) -> bool:
    """At least one non-hidden file anywhere below (stops at the first: cheap on a big corpus)."""
    for p in folder.rglob("*"):
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts):
            return True
    return False


def check_input(flag: str, path: str, *, what: str = "a file or a folder holding files") -> None:
    """A local input exists and holds something; a brace pattern (shards-{000..009}.tar): every
    path exists. URLs are left to the run (no network at parse time)."""
    if not path:
        raise FlagError(flag, "empty", what)
    if is_url(path):
        return
    if "{" in path:
        from braceexpand import braceexpand

        paths = list(braceexpand(path))
        missing = [p for p in paths if not _local(p).exists()]
        if missing:
            raise FlagError(
                flag, f"{len(missing)} of {len(paths)} paths of {path} do not exist, e.g. {missing[0]}", what
            )
        return
    local = _local(path)
    if not local.exists():
        raise FlagError(flag, f"{path} does not exist", what)
    if local.is_dir() and not _has_a_file(local):
        raise FlagError(flag, f"{path} is an empty folder (no files in it or below)", what)


def check_output(flag: str, path: str) -> None:
    """An output root: not empty; locally not an existing file, and in (or creatable in) a folder
    this user may write (URLs: left to the run)."""
    if not path:
        raise FlagError(flag, "empty", "a folder path or an fsspec URL (s3://bucket/prefix)")
    if is_url(path):
        return
    local = _local(path).absolute()
    if local.exists() and not local.is_dir():
        raise FlagError(flag, f"{path} is a file", "a folder (new or existing) or an fsspec URL")
    existing = next(p for p in (local, *local.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise FlagError(flag, f"{existing} is not writable by this user", "a folder you can write")


def codec_files(ref: str) -> list[Path]:
    """The files pipeline.codec.load would open for `ref`, by zoo.load's dispatch on the name alone
    (nothing is read): [.json, .safetensors] for a bundled name or a project codec, [.pth] for a
    reference checkpoint, [] when `ref` names neither."""
    from .codec import zoo

    if ref and (zoo.BUNDLED_DIR / f"{ref}.json").exists():
        stem = zoo.BUNDLED_DIR / ref
    else:
        path = _local(ref)
        if not ref:
            return []
        if path.suffix in (".pth", ".pt"):
            return [path]
        stem = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
        if path.suffix not in (".json", ".safetensors") and not Path(f"{stem}.json").exists():
            return []
    return [Path(f"{stem}.json"), Path(f"{stem}.safetensors")]


def codec_description(ref: str) -> dict[str, Any] | None:
    """The .json of a bundled or project codec (format, config, name, metadata) without its weights;
    None for a reference .pth, a missing file or one that does not parse (check_codec says which)."""
    files = codec_files(ref)
    if not files or files[0].suffix != ".json":
        return None
    try:
        document = json.loads(files[0].read_text())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


KIND_WORDS = {"2d": "a 2-D (image/raster) codec", "1d": "a 1-D (audio) codec"}


def check_codec(flag: str, ref: str, kind: str | None = None) -> dict[str, Any] | None:
    """`ref` names a codec whose files are there, whose .json is a codec description and, when `kind`
    ('2d' or '1d') is given, of that kind; returns its recorded config (None for a reference .pth:
    known once built). The weights are checked (content hash) when the run loads them."""
    from .codec import zoo
    from .codec.checkpoint import FORMAT

    accepted = (
        f"a bundled name ({', '.join(zoo.available())}), a project codec (.json + .safetensors pair, "
        "or their stem) or a reference .pth"
    )
    files = codec_files(ref)
    if not files:
        raise FlagError(flag, f"no codec {ref!r}" if ref else "empty", accepted)
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise FlagError(flag, f"{ref}: missing {' and '.join(missing)}", accepted)
    if files[0].suffix != ".json":
        return None
    description = codec_description(ref)
    if description is None:
        raise FlagError(flag, f"{files[0]} does not parse as JSON", "a codec written by pipeline.codec.save")
    if description.get("format") != FORMAT:
        problem = f"{files[0]} is not a codec description (format {description.get('format')!r})"
        raise FlagError(flag, problem, f"format {FORMAT}")
    config = description.get("config") if isinstance(description.get("config"), dict) else {}
    if kind is not None and config.get("kind") not in (None, kind):
        fits = [
            n
            for n in zoo.available()
            if ((codec_description(n) or {}).get("config") or {}).get("kind") == kind
        ]
        raise FlagError(
            flag,
            f"{ref} is {KIND_WORDS.get(config['kind'], repr(config['kind']))}, "
            f"this job needs {KIND_WORDS[kind]}",
            f"{KIND_WORDS[kind]}, e.g. {', '.join(fits)}" if fits else KIND_WORDS[kind],
        )
    return config


RAY_ADDRESS = re.compile(r"auto|local|(ray://)?[\w.-]+:\d{1,5}")


def check_address(flag: str, address: str) -> None:
    """A Ray address ray.init accepts (its form only: whether a cluster answers is the run's check)."""
    if not RAY_ADDRESS.fullmatch(address):
        raise FlagError(flag, f"got {address!r}", "auto, local, HOST:PORT or ray://HOST:PORT")


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
        default=EncodeConfig.source,
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
        default=SinkSpec.format,
        choices=sorted(SINKS),
        help="webdataset: tar shards readable by stock webdataset; zarr: one v3 store (fixed size)",
    )
    io.add_argument(
        "--latent-format",
        default=SinkSpec.latent_format,
        type=latent_format,
        help="npy: int8 .npy per sample; zstd/png/webp: entropy-coded latents (.latent.wlat)",
    )
    io.add_argument(
        "--shard-size",
        type=positive_int,
        default=SinkSpec.shard_size,
        help="samples per shard (unit of work and of resume)",
    )
    io.add_argument(
        "--mode",
        default=EncodeConfig.mode,
        choices=MODES,
        help="resume: continue an interrupted run, refuse changed inputs/settings; "
        "append: encode only inputs not yet in the output, and again those whose source changed (size, "
        "mtime or ETag; the old entry is listed as superseded in the manifest); overwrite: start again",
    )
    io.add_argument(
        "--limit",
        type=positive_int,
        default=EncodeConfig.limit,
        help="encode only the first N inputs of the listing",
    )
    codec = parser.add_argument_group("codec")
    codec.add_argument(
        "--codec", default=default_codec, help="bundled codec name or path (.json/.safetensors/.pth)"
    )
    codec.add_argument(
        "--batch-size",
        type=positive_int,
        default=RayConfig.batch_size,
        help="at most this many samples per codec call",
    )
    codec.add_argument(
        "--batch-pixels",
        type=positive_int,
        default=RayConfig.batch_pixels,
        help="at most this many input values (channels x pixels, or x audio samples) per codec call, so "
        "large images go in smaller batches (default: 64 RGB images of 256x256); a batch that runs out "
        "of memory is retried in halves, down to one sample",
    )
    ray = parser.add_argument_group("ray")
    ray.add_argument(
        "--address", default=RayConfig.address, help="Ray cluster address (default: start a local Ray)"
    )
    ray.add_argument(
        "--workers",
        type=positive_int,
        default=RayConfig.workers,
        help="encoder actors (default: one per CPU, or per GPU)",
    )
    ray.add_argument(
        "--num-gpus-per-worker",
        type=nonnegative_float,
        default=RayConfig.num_gpus_per_worker,
        help="GPUs per encoder actor; decoding stays on CPUs unless --decode gpu (0: encode on CPUs)",
    )
    ray.add_argument(
        "--decode",
        choices=DECODE_DEVICES,
        default=RayConfig.decode,
        help="cpu: Pillow decodes and resizes on the CPUs (default); gpu: JPEG bytes go to the encoder "
        "actors, which decode (nvJPEG, batched), resize and encode on their GPU (1 GPU per actor unless "
        "--num-gpus-per-worker); other inputs fall back to the CPU path per sample, counted. Needs a GPU "
        "and torchvision; the latents differ slightly from --decode cpu (docs/gpu.md)",
    )
    ray.add_argument(
        "--sample-timeout",
        type=positive_float,
        default=RayConfig.sample_timeout_s,
        help="seconds one input may take to read and decode before it becomes an error row",
    )
    ray.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (inputs, shards to encode/skip per --mode, encoder workers and devices, "
        "expected output size) and exit without encoding or writing; exit 1 if the run would be refused",
    )


def add_geometry_flags(group: argparse._ArgumentGroup) -> None:
    """--size and --crop (images and rasters): ImageSettings."""
    group.add_argument(
        "--size",
        type=nonnegative_int,
        default=ImageSettings.size,
        help="target side (crop=center) or shorter side (crop=none); 0 keeps the original size",
    )
    group.add_argument(
        "--crop",
        choices=CROPS,
        default=ImageSettings.crop,
        help="center: resize the shorter side to --size and center-crop a square; "
        "none: keep the aspect ratio (padded to a multiple of 2^J by the codec)",
    )


def image_settings(args: argparse.Namespace) -> dict[str, Any]:
    """ImageSettings' fields from --size/--crop (and --buckets where the job has it)."""
    return {
        "size": args.size or None,  # --size 0: keep the original size
        "crop": args.crop,
        "buckets": getattr(args, "buckets", ImageSettings.buckets),
    }


def add_bucket_flags(group: argparse._ArgumentGroup) -> None:
    """--buckets and --flip-pair (images): variable aspect ratios and mirrored latents."""
    group.add_argument(
        "--buckets",
        default=ImageSettings.buckets,
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
        raise argparse.ArgumentTypeError(f"got {text!r}; accepted: KEY=VALUE, KEY a Python identifier")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


CODEC_KIND = {"image": "2d", "raster": "2d", "audio": "1d"}  # the codec each job's inputs need


def validate_encode_args(args: argparse.Namespace, modality: str = "image") -> None:
    """What every encode job checks after parsing, before a config, Ray or the output exist: the
    input is there, the output can be one, flags that cannot go together, then the codec (the one
    check that imports the codec package): it exists, is of the job's kind (2-D for images and
    rasters, 1-D for audio), --buckets sides are multiples of its 2^J, --decode gpu has RGB to make."""
    check_input("--input", args.input)
    check_output("--output", args.output)
    if (
        not is_url(args.input)
        and not is_url(args.output)
        and _local(args.input).resolve() == _local(args.output).resolve()
    ):
        raise FlagError("--output", "the same path as --input", "a folder other than the input")
    if args.format == "zarr" and args.latent_format != LATENT_NPY:
        raise FlagError(
            "--latent-format",
            f"{args.latent_format!r} with --format zarr (Zarr stores int8 latents, compressed by Zarr)",
            "npy with --format zarr; an entropy coding with --format webdataset",
        )
    check_source_options(args)
    buckets = getattr(args, "buckets", None)
    _check_fixed_shape(args, buckets)
    if buckets is not None and getattr(args, "crop", "center") != "center":
        raise FlagError("--buckets", "not with --crop none (each bucket is resized and center-cropped)")
    if buckets is not None:
        _check_buckets(buckets, 1)  # the syntax first, before the codec package is imported
    if args.address is not None:
        check_address("--address", args.address)
    gpu_decode = getattr(args, "decode", "cpu") == "gpu"
    if gpu_decode and modality != "image":  # the rule of preprocess/factory.py, before the run
        raise FlagError("--decode", f"gpu decodes JPEG images, not {modality} inputs", "cpu for this job")
    config = check_codec("--codec", args.codec, CODEC_KIND[modality])
    if buckets is not None and config is not None and isinstance(config.get("J"), int):
        _check_buckets(buckets, 2 ** config["J"])
    if gpu_decode and config is not None and config.get("channels") not in (None, 3):
        raise FlagError(
            "--decode", f"gpu decodes to RGB, {args.codec} has {config['channels']} channels", "cpu"
        )


def _check_fixed_shape(args: argparse.Namespace, buckets: str | None) -> None:
    """--crop none or --size 0 give images of many sizes: a format of one latent shape (Zarr)
    would refuse them once the run has started."""
    from .formats import output_format

    crop, size = getattr(args, "crop", "center"), getattr(args, "size", None)
    if buckets is not None or not output_format(args.format).fixed_shape or (crop != "none" and size != 0):
        return
    flag, value = ("--crop", "none") if crop == "none" else ("--size", "0")
    raise FlagError(
        flag,
        f"got {value} (images of varying sizes), --format {args.format} stores one latent shape",
        "--crop center with a --size, --buckets, or --format webdataset",
    )


def check_source_options(args: argparse.Namespace) -> None:
    """Each --source-option KEY is an option of the source (its constructor's keywords; --source auto:
    the source detected for a local input; a URL is not probed)."""
    keys = [key for key, _ in args.source_option or []]
    if not keys:
        return
    name, how = args.source, ""
    if name == "auto":
        if is_url(args.input):
            return
        from .sources import detect_source

        try:
            name, how = detect_source(args.input), " (detected)"
        except FileNotFoundError:
            return
    params = inspect.signature(SOURCES[name].__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = list(params)[2:]  # not self, not the input path
    unknown = [key for key in keys if key not in accepted]
    if unknown:
        raise FlagError(
            "--source-option",
            f"{unknown[0]!r} is not an option of source {name}{how}",
            ", ".join(accepted) or "none",
        )


def _check_buckets(spec: str, multiple: int) -> None:
    from .preprocess.image import parse_buckets

    try:
        parse_buckets(spec, multiple)
    except (ValueError, ZeroDivisionError) as err:
        problem = str(err).removeprefix("--buckets").lstrip(": ")
        raise FlagError(
            "--buckets",
            f"got {spec!r} ({problem})",
            f"WxH,WxH,... (sides multiples of {multiple}) or area=PIXELS:ratios=W:H,... (docs/buckets.md)"
            if multiple > 1
            else "WxH,WxH,... or area=PIXELS:ratios=W:H,... (docs/buckets.md)",
        ) from None


def config_from_args(
    args: argparse.Namespace,
    *,
    image: dict[str, Any] | None = None,
    audio: dict[str, Any] | None = None,
    raster: dict[str, Any] | None = None,
) -> EncodeConfig:
    """The run's config: the common flags, plus the job's own settings (keywords of ImageSettings,
    AudioSettings, RasterSettings; a job that has none of a kind leaves its defaults)."""
    return EncodeConfig(
        input=args.input,
        sink=SinkSpec(
            output=args.output,
            format=args.format,
            latent_format=args.latent_format,
            shard_size=args.shard_size,
            flip_pair=getattr(args, "flip_pair", SinkSpec.flip_pair),
        ),
        source=args.source,
        source_options=dict(getattr(args, "source_option", None) or []),
        codec=args.codec,
        mode=args.mode,
        limit=args.limit,
        image=ImageSettings(**(image or {})),
        audio=AudioSettings(**(audio or {})),
        raster=RasterSettings(**(raster or {})),
        ray=RayConfig(
            address=args.address,
            workers=args.workers,
            num_gpus_per_worker=args.num_gpus_per_worker,
            batch_size=args.batch_size,
            batch_pixels=args.batch_pixels,
            decode=getattr(args, "decode", RayConfig.decode),
            sample_timeout_s=args.sample_timeout,
        ),
        progress=not args.no_progress,
    )


def encode_config(
    parser: argparse.ArgumentParser, args: argparse.Namespace, **settings: dict[str, Any] | None
) -> EncodeConfig:
    """config_from_args; a setting the config refuses is a flag error (one line, exit 2)."""
    try:
        return config_from_args(args, **settings)
    except ValueError as err:
        parser.error(str(err))


def run_encode_job(cfg: EncodeConfig, *, dry_run: bool = False) -> int:
    """What every encode job does after parsing: run (or --dry-run: print the plan, write nothing),
    print the summary, exit code (1: failed shards).

    Errors the user fixes with a flag or another output (no GPU for --decode gpu, an output holding
    another run, an output another run is writing) are one line on stderr and exit code 2, not a
    traceback; nothing was written. Anything else is a bug and keeps its traceback."""
    from .codec.checkpoint import CheckpointError
    from .runtime import OutputConflictError, run_encode
    from .runtime.lease import LeaseHeldError
    from .sources.base import NoInputsError

    if dry_run:
        from .runtime.dry_run import dry_run_main

        return dry_run_main(cfg)
    try:
        summary = run_encode(cfg)
    except (ConfigurationError, OutputConflictError, LeaseHeldError) as err:
        print(f"error: {_one_line(str(err))}", file=sys.stderr)
        return 2
    except NoInputsError as err:  # the input exists and holds nothing the source takes
        print(f"error: --input: {_one_line(str(err))}", file=sys.stderr)
        return 2
    except CheckpointError as err:  # a codec file that exists but does not load (corrupt, tampered)
        print(f"error: --codec: {_one_line(str(err))}", file=sys.stderr)
        return 2
    print(summary.format())
    return 1 if summary.failed_shards else 0
