#!/usr/bin/env python
"""Music source separation on audio latents vs the waveform at the same input budget.

Encodes a MUSDB-layout stems root with the pipeline (musdb source, default audio codec, local Ray)
into <output>/latents/{train,test} (one sample per window holding the mixture and every stem; or
reuses --latents), streams the training windows through the stock latent loader and trains the same
1-D conv separator on the mixture's latents (108 x 258 per 1.49 s window) and on the mixture's
waveform resampled and folded to the same size (108 x 256), decodes the predicted stem latents with
the codec, and reports SI-SDR per stem on held-out tracks, training samples/s and peak memory:
<output>/report.md, report.json, curves.png, spectrogram.png. Make the data first: `python
scripts/make_stems.py` (Bach chorales rendered per voice with Debian's FluidR3_GM soundfont into
data/stems/). Details: docs/learning-audio.md.

The defaults take a few minutes on 2 CPU cores; on a GPU (--device auto picks it) try
    --epochs 30 --width 256 --blocks 8 --batch-size 32   (and more tracks: make_stems.py --tracks 200)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cli import JobArgumentParser, positive_int
from ..config import DEFAULT_AUDIO_CODEC
from ..learning.cli import add_learning_flags, validate_learning_args
from ..learning.separate import LATENT_NORMS, STEM_KINDS, SeparateConfig

DEFAULTS = SeparateConfig()


def build_parser() -> argparse.ArgumentParser:
    parser = JobArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--stems",
        default=DEFAULTS.stems,
        help="MUSDB-layout root, train/ + test/ (default: %(default)s)",
    )
    parser.add_argument(
        "--latents",
        default=None,
        help="an existing encode of --stems, same --window: <dir>/train and <dir>/test runs (skips encoding)",
    )
    parser.add_argument(
        "--window",
        type=positive_int,
        default=DEFAULTS.window,
        help="samples per window, 44.1 kHz (default: %(default)s)",
    )
    parser.add_argument(
        "--workers", type=positive_int, default=None, help="Ray encoder actors (default: one per CPU)"
    )
    parser.add_argument(
        "--eval-every",
        type=positive_int,
        default=DEFAULTS.eval_every,
        help="score held-out windows every N epochs",
    )
    parser.add_argument(
        "--no-full-arm",
        action="store_true",
        help="skip the third arm, the 44.1 kHz waveform itself (4.7x the input values; the ceiling)",
    )
    parser.add_argument(
        "--no-waveform-arm",
        action="store_true",
        help="skip the same-size waveform arm (e.g. to rerun the latent arm alone with other settings)",
    )
    parser.add_argument(
        "--latent-norm",
        choices=LATENT_NORMS,
        default=DEFAULTS.latent_norm,
        help="latent arm's scaling: channel = the run manifest's per-channel mean/std (one std per channel"
        " shared by mixture and stems, mean removed from the mixture, loss weighted by std^2); scalar ="
        " one std for inputs and one for targets from the first batches (default: %(default)s)",
    )
    parser.add_argument(
        "--latent-stem",
        choices=STEM_KINDS,
        default=DEFAULTS.latent_stem,
        help="latent arm's first layers: mix = 1x1 conv mixing the channels of each step + BatchNorm +"
        " GELU, then the 3-tap conv; conv = the 3-tap conv alone, as the waveform arms"
        " (default: %(default)s)",
    )
    add_learning_flags(parser, output=DEFAULTS.output, epochs=DEFAULTS.epochs)
    parser.set_defaults(
        codec=DEFAULT_AUDIO_CODEC,
        width=DEFAULTS.width,
        blocks=DEFAULTS.blocks,
        batch_size=DEFAULTS.batch_size,
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_checked(argv, lambda a: validate_learning_args(a, "--stems", codec_kind="1d"))
    import torch

    from ..learning.separate import run_separation

    if args.threads > 0:  # --threads (add_learning_flags): was parsed but not applied by this job
        torch.set_num_threads(args.threads)
    cfg = SeparateConfig(
        stems=args.stems,
        output=args.output,
        latents=args.latents,
        codec=args.codec,
        window=args.window,
        train_windows=args.samples,
        width=args.width,
        blocks=args.blocks,
        epochs=args.epochs,
        eval_every=args.eval_every,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        workers=args.workers,
        progress=not args.no_progress,
        full_arm=not args.no_full_arm,
        waveform_arm=not args.no_waveform_arm,
        latent_norm=args.latent_norm,
        latent_stem=args.latent_stem,
    )
    report = run_separation(cfg)
    print(headline(report))
    print(f"report: {Path(cfg.output) / 'report.md'}")
    return 0


def headline(report: dict) -> str:
    """The printed figures (the full side-by-side table is in report.md)."""
    lines = []
    for name, arm in report["arms"].items():
        final = arm["final"]
        stems = ", ".join(f"{k[7:]} {v:.2f}" for k, v in final.items() if k.startswith("si_sdr_"))
        lines.append(
            f"{name:>8}: SI-SDR {final['si_sdr']:.2f} dB ({stems});"
            f" {arm['samples_per_s']:.1f} train samples/s; peak memory {arm['memory'].get('peak_mb')} MB"
        )
    lines += [f"{k}: {v}" for k, v in report["extra"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
