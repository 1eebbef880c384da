"""Train a WaLLoC codec (or fit the closed-form KLT codec) and write it in the project format.

    # the bundled RGB codec: KLT-initialised 1x1 encoder, deep decoder, resumable
    python jobs/train_codec.py --kind 2d --data data/photos --J 3 --latent-dim 12 --Nd 128 \\
        --init klt --steps 6000 --out pipeline/codec/bundled/rgb-16x
    # the KLT baseline (closed form, seconds)
    python jobs/train_codec.py --kind 2d --data data/photos --decoder linear --steps 0 --out ...
Installed (pip install walloc-pipeline): the same flags as `walloc-train-codec`.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from dataclasses import fields
from pathlib import Path

from ..cli import (
    FlagError,
    JobArgumentParser,
    check_address,
    check_codec,
    check_input,
    float_range,
    int_range,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
)
from ..training.codec_loop import CodecTrainConfig


def choice(*names: str):
    """A flag that takes one of `names` (typed like the others, so the loop below needs no special case)."""

    def parse(text: str) -> str:
        if text not in names:
            raise argparse.ArgumentTypeError(f"got {text!r}; accepted: {', '.join(names)}")
        return text

    return parse


# the range of each CodecTrainConfig field's flag (--steps, --lr, ...; --device: `device` below); a new
# field without an entry here fails build_parser (KeyError), so its flag cannot go unchecked
TRAIN_FLAG_TYPES = {
    "steps": nonnegative_int,  # 0 with --decoder linear: the closed-form KLT codec
    "batch_size": positive_int,
    "lr": positive_float,
    "min_lr": positive_float,
    "warmup_steps": nonnegative_int,
    "schedule": choice("cosine", "plateau"),
    "lr_floor": float_range(0.0, 1.0),
    "weight_decay": nonnegative_float,
    "plateau_every": positive_int,
    "plateau_patience": nonnegative_int,
    "plateau_factor": float_range(0.0, 1.0, low_open=True),
    "grad_clip": nonnegative_float,
    "val_every": positive_int,
    "ckpt_every": positive_int,
    "num_workers": nonnegative_int,
    "seed": nonnegative_int,
}
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def device(text: str) -> str:
    """--device: auto, cpu, cuda, cuda:N or mps."""
    if not DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"got {text!r}; accepted: auto, cpu, cuda, cuda:N, mps")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = JobArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", choices=["2d", "1d"], required=True, help="2d: RGB images, 1d: stereo audio")
    p.add_argument("--channels", type=int, help="2d: 3 (RGB, default) or 1 (grey: luma of the images)")
    p.add_argument("--data", nargs="+", required=True, help="image or audio folders (searched recursively)")
    p.add_argument("--out", required=True, help="output stem: writes OUT.json + OUT.safetensors")
    p.add_argument("--name", help="codec name recorded in the JSON (default: the stem)")
    p.add_argument("--J", type=int_range(1, 12), default=3, help="wavelet packet levels (2d: 3, 1d: 8)")
    p.add_argument(
        "--latent-dim", type=positive_int, default=12, help="latent channels (rgb-16x: 12, stereo: 108)"
    )
    p.add_argument("--latent-bits", type=int_range(2, 8), default=8, help="bits per latent integer (2..8)")
    p.add_argument(
        "--Nd", type=positive_int, default=128, help="decoder width (1d: a multiple of latent-dim)"
    )
    p.add_argument("--Ne", type=positive_int, help="conv encoder width (implies --no-lightweight)")
    p.add_argument("--no-lightweight", dest="lightweight", action="store_false", help="conv encoder, not 1x1")
    p.add_argument("--post-filter", action="store_true", help="1d: 129-tap filter after synthesis")
    p.add_argument(
        "--decoder",
        choices=["deep", "linear", "residual"],
        default="deep",
        help="deep: the reference's; linear + --steps 0: the KLT codec; residual: linear + deep, summed",
    )
    p.add_argument(
        "--init",
        choices=["none", "klt"],
        default="none",
        help="klt: start as the KLT codec (1x1 encoder and deep decoder; 1d: identity post filter)",
    )
    p.add_argument("--klt-batches", type=positive_int, default=16, help="batches used to fit the KLT")
    p.add_argument("--init-codec", help="start from this codec's weights (name or path, same config)")
    p.add_argument(
        "--klt-gain",
        type=positive_float,
        help="KLT latents with one quantizer step for every channel (the rate knob: lower = fewer bits; "
        "rgb-16x: 5); default: whitened channels",
    )
    p.add_argument(
        "--freeze-encoder", action="store_true", help="train the decoder only (keeps the init encoder, rate)"
    )
    p.add_argument("--crop", type=positive_int, default=128, help="2d: random crop side (pixels)")
    p.add_argument("--window", type=positive_int, default=1 << 15, help="1d: random window (samples)")
    p.add_argument(
        "--valid-fraction",
        type=float_range(0.0, 1.0, low_open=True, high_open=True),
        default=0.2,
        help="files held out for validation",
    )
    p.add_argument("--kinds", nargs="+", default=["photo"], help="2d: MANIFEST.tsv kinds to use")
    p.add_argument("--work-dir", help="checkpoints and log.jsonl (default: OUT.work); reruns resume")
    p.add_argument(
        "--stop-at",
        type=positive_int,
        help="end this session at step N (checkpointed, codec written); rerun to resume towards --steps",
    )
    p.add_argument("--workers", type=positive_int, default=1, help=">1: Ray Train data parallel workers")
    p.add_argument("--address", help="Ray cluster address (implies Ray even with one worker)")
    p.add_argument("--note", default="", help="free text stored in the codec metadata")
    for f in fields(CodecTrainConfig):  # --steps, --batch-size, --lr, ... with the CodecTrainConfig defaults
        p.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=TRAIN_FLAG_TYPES[f.name] if f.name != "device" else device,
            default=f.default,
            help=f"(default {f.default})",
        )
    return p


def validate(a: argparse.Namespace) -> None:
    for folder in a.data:
        check_input("--data", folder, what="image or audio folders")
    out = Path(a.out)
    if not a.out or out.is_dir():
        raise FlagError("--out", f"{a.out!r} is {'a folder' if a.out else 'empty'}",
                        "a path stem: the job writes OUT.json and OUT.safetensors")  # fmt: skip
    if not a.lightweight and a.Ne is None:
        raise FlagError("--no-lightweight", "the conv encoder needs its width", "with --Ne N")
    widths = [("--Nd", a.Nd)] if a.decoder != "linear" else []
    widths += [("--Ne", a.Ne)] if a.Ne is not None else []
    for flag, width in widths if a.kind == "1d" else []:  # Oobleck blocks widen by Nd/latent_dim
        if width % a.latent_dim:
            raise FlagError(
                flag, f"{width} with --latent-dim {a.latent_dim}", "a multiple of --latent-dim (1d)"
            )
    if a.channels is not None and (a.kind != "2d" or a.channels not in (1, 3)):
        raise FlagError("--channels", f"{a.channels} with --kind {a.kind}", "1 or 3, with --kind 2d")
    if a.post_filter and a.kind != "1d":
        raise FlagError("--post-filter", f"with --kind {a.kind}", "--kind 1d (audio codecs only)")
    if a.address is not None:
        check_address("--address", a.address)
    if a.stop_at is not None and (a.workers > 1 or a.address is not None):
        raise FlagError("--stop-at", "with Ray Train (--workers/--address)", "a single-process run")
    if a.init_codec is not None:
        check_codec("--init-codec", a.init_codec, a.kind)


def _invocation() -> list[str]:
    """How this run was started, for the codec's metadata: the console script, else the checkout's job."""
    script = Path(sys.argv[0]).name
    return [script] if script.startswith("walloc-") else ["python", "jobs/train_codec.py"]


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_checked(argv, validate)
    from ..training.job import CodecJob, run_job

    cfg = CodecTrainConfig(**{f.name: getattr(a, f.name) for f in fields(CodecTrainConfig)})
    job = CodecJob(
        kind=a.kind, channels=a.channels, data=a.data, out=a.out, name=a.name, J=a.J, latent_dim=a.latent_dim,
        latent_bits=a.latent_bits, Nd=a.Nd, Ne=a.Ne, lightweight=a.lightweight and a.Ne is None,
        post_filter=a.post_filter, decoder=a.decoder, init=a.init, klt_batches=a.klt_batches,
        klt_gain=a.klt_gain, freeze_encoder=a.freeze_encoder, init_codec=a.init_codec, crop=a.crop,
        window=a.window, valid_fraction=a.valid_fraction, kinds=tuple(a.kinds), work_dir=a.work_dir,
        stop_at=a.stop_at, workers=a.workers, address=a.address, note=a.note, train=cfg,
        command=shlex.join([*_invocation(), *(argv if argv is not None else sys.argv[1:])]),
    )  # fmt: skip
    print(f"wrote {run_job(job)}")


if __name__ == "__main__":
    main()
