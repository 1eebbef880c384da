"""Train a WaLLoC codec (or fit the closed-form KLT codec) and write it in the project format.

    # the bundled RGB codec: KLT-initialised 1x1 encoder, deep decoder, resumable
    python jobs/train_codec.py --kind 2d --data data/photos --J 3 --latent-dim 12 --Nd 128 \\
        --init klt --steps 6000 --out pipeline/codec/bundled/rgb-16x
    # the KLT baseline (closed form, seconds)
    python jobs/train_codec.py --kind 2d --data data/photos --decoder linear --steps 0 --out ...
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import fields

from pipeline.training.job import CodecJob, run_job
from pipeline.training.loop import TrainConfig


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", choices=["2d", "1d"], required=True, help="2d: RGB images, 1d: stereo audio")
    p.add_argument("--data", nargs="+", required=True, help="image or audio folders (searched recursively)")
    p.add_argument("--out", required=True, help="output stem: writes OUT.json + OUT.safetensors")
    p.add_argument("--name", help="codec name recorded in the JSON (default: the stem)")
    p.add_argument("--J", type=int, default=3, help="wavelet packet levels (2d: 3, 1d: 8)")
    p.add_argument("--latent-dim", type=int, default=12, help="latent channels (rgb-16x: 12, stereo: 108)")
    p.add_argument("--latent-bits", type=int, default=8, help="bits per latent integer (2..8)")
    p.add_argument("--Nd", type=int, default=128, help="decoder width (1d: a multiple of latent-dim)")
    p.add_argument("--Ne", type=int, help="conv encoder width (implies --no-lightweight)")
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
    p.add_argument("--klt-batches", type=int, default=16, help="batches used to fit the KLT")
    p.add_argument("--init-codec", help="start from this codec's weights (name or path, same config)")
    p.add_argument(
        "--klt-gain",
        type=float,
        help="KLT latents with one quantizer step for every channel (the rate knob: lower = fewer bits; "
        "rgb-16x: 5); default: whitened channels",
    )
    p.add_argument(
        "--freeze-encoder", action="store_true", help="train the decoder only (keeps the init encoder, rate)"
    )
    p.add_argument("--crop", type=int, default=128, help="2d: random crop side (pixels)")
    p.add_argument("--window", type=int, default=1 << 15, help="1d: random window (samples)")
    p.add_argument("--valid-fraction", type=float, default=0.2, help="files held out for validation")
    p.add_argument("--kinds", nargs="+", default=["photo"], help="2d: MANIFEST.tsv kinds to use")
    p.add_argument("--work-dir", help="checkpoints and log.jsonl (default: OUT.work); reruns resume")
    p.add_argument("--workers", type=int, default=1, help=">1: Ray Train data parallel workers")
    p.add_argument("--address", help="Ray cluster address (implies Ray even with one worker)")
    p.add_argument("--note", default="", help="free text stored in the codec metadata")
    for f in fields(TrainConfig):  # --steps, --batch-size, --lr, ... with the TrainConfig defaults
        p.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=type(f.default),
            default=f.default,
            help=f"(default {f.default})",
        )
    a = p.parse_args(argv)
    cfg = TrainConfig(**{f.name: getattr(a, f.name) for f in fields(TrainConfig)})
    job = CodecJob(
        kind=a.kind, data=a.data, out=a.out, name=a.name, J=a.J, latent_dim=a.latent_dim,
        latent_bits=a.latent_bits, Nd=a.Nd, Ne=a.Ne, lightweight=a.lightweight and a.Ne is None,
        post_filter=a.post_filter, decoder=a.decoder, init=a.init, klt_batches=a.klt_batches,
        klt_gain=a.klt_gain, freeze_encoder=a.freeze_encoder, init_codec=a.init_codec, crop=a.crop,
        window=a.window, valid_fraction=a.valid_fraction, kinds=tuple(a.kinds), work_dir=a.work_dir,
        workers=a.workers, address=a.address, note=a.note, train=cfg,
        command=shlex.join(["python", "jobs/train_codec.py", *(argv if argv is not None else sys.argv[1:])]),
    )  # fmt: skip
    print(f"wrote {run_job(job)}")


if __name__ == "__main__":
    main()
