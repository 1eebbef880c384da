"""Flags every learning job shares (jobs/learn_*.py): output, codec, size of the run, device."""

from __future__ import annotations

import argparse

import torch

from ..config import DEFAULT_IMAGE_CODEC
from .loop import TrainConfig
from .models import NetConfig


def add_learning_flags(
    p: argparse.ArgumentParser, *, output: str, epochs: int, samples: int | None = None
) -> None:
    g = p.add_argument_group("training (both arms get the same settings)")
    g.add_argument(
        "--output", default=output, help="report, plots and encoded latents go here (default: %(default)s)"
    )
    g.add_argument("--codec", default=DEFAULT_IMAGE_CODEC, help="codec to encode with (default: %(default)s)")
    g.add_argument(
        "--epochs", type=int, default=epochs, help="training epochs per arm (default: %(default)s)"
    )
    g.add_argument(
        "--samples",
        type=int,
        default=samples,
        help="training samples (default: %(default)s; None = all available)",
    )
    g.add_argument("--batch-size", type=int, default=32, help="(default: %(default)s)")
    g.add_argument(
        "--lr", type=float, default=2e-3, help="AdamW learning rate, cosine decay (default: %(default)s)"
    )
    g.add_argument("--width", type=int, default=32, help="trunk width after the stem (default: %(default)s)")
    g.add_argument(
        "--blocks", type=int, default=1, help="residual blocks per trunk stage (default: %(default)s)"
    )
    g.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    g.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="auto = CUDA if available (default: auto)",
    )
    g.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default: %(default)s: on a CPU shared with other jobs, OpenMP "
        "spin-waiting made 2 threads 10x slower than 1 on the 2-core machine these figures come "
        "from; raise it on a quiet machine)",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def net_and_train(args: argparse.Namespace) -> tuple[NetConfig, TrainConfig]:
    """The configs from the flags; also applies --threads to this process."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    net = NetConfig(width=args.width, blocks=args.blocks)
    train = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        progress=not args.no_progress,
    )
    return net, train
