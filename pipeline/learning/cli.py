"""Flags every learning job shares (jobs/learn_*.py): output, codec, size of the run, device."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..cli import (
    check_codec,
    check_input,
    check_output,
    float_range,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
)
from ..config import DEFAULT_IMAGE_CODEC

if TYPE_CHECKING:  # torch-heavy: imported when the configs are built, after the flags are checked
    from .loop import LearnConfig
    from .models import NetConfig


def add_learning_flags(
    p: argparse.ArgumentParser,
    *,
    output: str,
    epochs: int,
    samples: int | None = None,
    codec: str | None = DEFAULT_IMAGE_CODEC,
) -> None:
    """codec=None: the job picks the bundled codec for its data's channels (image_codec_for)."""
    g = p.add_argument_group("training (both arms get the same settings)")
    g.add_argument(
        "--output", default=output, help="report, plots and encoded latents go here (default: %(default)s)"
    )
    g.add_argument(
        "--codec",
        default=codec,
        help="codec to encode with (default: "
        + (codec or "the bundled one for the images' channels: rgb-16x-klt, grey-16x-klt for grey")
        + ")",
    )
    g.add_argument(
        "--epochs", type=positive_int, default=epochs, help="training epochs per arm (default: %(default)s)"
    )
    g.add_argument(
        "--samples",
        type=positive_int,
        default=samples,
        help="training samples (default: %(default)s; None = all available)",
    )
    g.add_argument("--batch-size", type=positive_int, default=32, help="(default: %(default)s)")
    g.add_argument(
        "--lr",
        type=positive_float,
        default=2e-3,
        help="AdamW learning rate, cosine decay (default: %(default)s)",
    )
    g.add_argument(
        "--width", type=positive_int, default=32, help="trunk width after the stem (default: %(default)s)"
    )
    g.add_argument(
        "--blocks",
        type=positive_int,
        default=1,
        help="residual blocks per trunk stage (default: %(default)s)",
    )
    g.add_argument("--seed", type=nonnegative_int, default=0, help="(default: %(default)s)")
    g.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="auto = CUDA if available (default: auto)",
    )
    g.add_argument(
        "--threads",
        type=nonnegative_int,
        default=1,
        help="torch CPU threads (default: %(default)s: on a CPU shared with other jobs, OpenMP "
        "spin-waiting made 2 threads 10x slower than 1 on the 2-core machine these figures come "
        "from; raise it on a quiet machine; 0: torch's own default)",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


IMAGE_ARMS = ("latent", "pixel", "full")  # pipeline.learning.arms.ARMS (torch-free here)


def add_arm_flags(g: argparse._ArgumentGroup) -> None:
    """--arms and --seeds of the three-arm image jobs (classify, colorize)."""
    g.add_argument(
        "--arms",
        nargs="+",
        choices=IMAGE_ARMS,
        default=list(IMAGE_ARMS),
        help="latent: the codec's latents; pixel: 64x64 pixels (the latents' size); full: 256x256 pixels, "
        "the ceiling (default: all)",
    )
    g.add_argument(
        "--seeds", type=positive_int, default=3, help="seeds per arm, from --seed (default: %(default)s)"
    )


def add_regularisation_flags(
    g: argparse._ArgumentGroup | argparse.ArgumentParser, *, weight_decay: float, dropout: float | None = None
) -> None:
    """--weight-decay (AdamW) and, for a network with a dropout layer, --dropout: the same for every arm."""
    if dropout is not None:
        g.add_argument(
            "--dropout",
            type=float_range(0.0, 1.0, high_open=True),
            default=dropout,
            help="before the head, every arm (default: %(default)s)",
        )
    g.add_argument(
        "--weight-decay",
        type=nonnegative_float,
        default=weight_decay,
        help="AdamW, every arm (default: %(default)s)",
    )


def validate_learning_args(
    args: argparse.Namespace, data_flag: str | None = None, codec_kind: str = "2d"
) -> None:
    """The checks every learning job makes before it encodes or trains: --latents (when given) is an
    existing run, else the job's data flag (e.g. --images; None: the job renders its own data) names
    existing files; the output can be one; the codec exists and is of `codec_kind`."""
    latents = getattr(args, "latents", None)
    if latents is not None:
        check_input("--latents", latents, what="the output folder of an earlier run")
    elif data_flag is not None:
        check_input(data_flag, getattr(args, data_flag.lstrip("-").replace("-", "_")) or "")
    check_output("--output", args.output)
    if args.codec is not None:  # None: the job picks the bundled codec for its data's channels
        check_codec("--codec", args.codec, codec_kind)


def net_and_train(args: argparse.Namespace) -> tuple[NetConfig, LearnConfig]:
    """The configs from the flags; also applies --threads to this process."""
    import torch

    from .loop import LearnConfig
    from .models import NetConfig

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    net = NetConfig(width=args.width, blocks=args.blocks)
    train = LearnConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        progress=not args.no_progress,
    )
    return net, train
