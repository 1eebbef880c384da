#!/usr/bin/env python
"""Bucketed loader vs plain loader: samples/s of reading latents for training, side by side.

Question: does batching by aspect bucket (one latent shape per batch, buckets drawn in proportion,
a global order from (seed, epoch)) cost read throughput compared with the plain loader over a
square-cropped run of the same images? Both runs are encoded first by the pipeline (local Ray,
bundled image codec): plain = --size S center crops, bucketed = --buckets; then each loader reads
whole epochs (after one warm-up epoch, so the page cache holds the shards in both cases) at the
same batch size, in this process (num_workers=0) and with DataLoader workers (`.loader()`, which
starts its workers again every epoch: on small runs their start-up dominates those rows). Rates are
samples per second of wall time; "Mpix/s" counts the codec input pixels the latents stand for.
Every epoch uses a new loader (shuffle_buffer 4x the batch), so it reads its tars / Zarr shards again.

    .venv/bin/python benchmarks/bucketed_loader.py                       # data/imagenet-mini, 192 images
    .venv/bin/python benchmarks/bucketed_loader.py --limit 360 --epochs 3 --workers 0 2
    .venv/bin/python benchmarks/bucketed_loader.py --reuse out/bench-buckets   # skip the encoding
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import EncodeConfig, ImageSettings  # noqa: E402
from pipeline.formats import formats, output_format  # noqa: E402
from pipeline.loaders import RunInfo  # noqa: E402
from pipeline.sinks import SinkSpec  # noqa: E402

DEFAULT_INPUT = ROOT / "data" / "imagenet-mini" / "train"
BUCKETS = "256x256,320x192,192x320,288x224,224x288"


def encode(input_dir: Path, output: Path, fmt: str, limit: int, shard_size: int, **image) -> None:
    from pipeline.runtime import run_encode

    if (output / "manifest.json").exists():
        return
    cfg = EncodeConfig(
        input=str(input_dir),
        sink=SinkSpec(output=str(output), format=fmt, shard_size=shard_size),
        limit=limit,
        image=ImageSettings(**image),
        progress=True,
    )
    summary = run_encode(cfg)
    print(f"encoded {output.name}: {summary.written} samples in {summary.seconds:.1f} s", flush=True)


def measure(cls, root: Path, batch_size: int, epochs: int, workers: int) -> tuple[float, float, int]:
    """(samples/s, input pixels/s, batches) over `epochs` epochs after a warm-up epoch. Each epoch uses
    a new loader (built in the timing: manifest, catalog), so no tar or Zarr shard stays cached in
    the process from one epoch to the next: every epoch reads its data again."""
    samples = pixels = batches = 0
    for epoch in range(epochs + 1):
        if epoch == 1:  # epoch 0 warms the page cache and the code paths
            samples = pixels = batches = 0
            started = time.perf_counter()
        ds = cls(str(root), batch_size=batch_size, shuffle_buffer=4 * batch_size, seed=0)
        ds.set_epoch(epoch)
        for z, labels in ds.loader(num_workers=workers) if workers else ds:
            samples += len(labels)
            pixels += len(labels) * z.shape[-2] * z.shape[-1] * 64  # J=3: 8x8 pixels per latent position
            batches += 1
    seconds = time.perf_counter() - started
    return samples / seconds, pixels / seconds, batches


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="image folder (ImageNet layout)")
    p.add_argument("--reuse", type=Path, default=ROOT / "out" / "bench-buckets", help="where the runs live")
    p.add_argument("--limit", type=int, default=192, help="images per run")
    p.add_argument("--size", type=int, default=256, help="plain run: center crop side")
    p.add_argument("--buckets", default=BUCKETS, help="bucketed run: --buckets of the job")
    p.add_argument("--shard-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per configuration")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers to try")
    p.add_argument("--formats", nargs="+", default=sorted(formats()), choices=sorted(formats()))
    args = p.parse_args(argv)

    runs = {}
    for fmt in args.formats:
        plain, bucketed = args.reuse / f"{fmt}-plain", args.reuse / f"{fmt}-buckets"
        encode(args.input, plain, fmt, args.limit, args.shard_size, size=args.size)
        encode(args.input, bucketed, fmt, args.limit, args.shard_size, buckets=args.buckets)
        runs[fmt] = (plain, bucketed)

    print(f"\nbatch {args.batch_size}, {args.epochs} timed epochs after a warm-up, int8 latents -> float")
    columns = ("format", "loader", "workers", "buckets", "samples/s", "Mpix/s", "batches")
    header = "{:<11} {:<9} {:>7} {:>7} {:>10} {:>8} {:>8}".format(*columns)
    print(header)
    print("-" * len(header))
    for fmt, (plain, bucketed) in runs.items():
        cls = output_format(fmt).stream_loader()
        for workers in args.workers:
            for name, root in (("plain", plain), ("bucketed", bucketed)):
                nb = len(RunInfo.open(str(root)).manifest.get("buckets") or {}) or 1
                rate, pix, batches = measure(cls, root, args.batch_size, args.epochs, workers)
                print(
                    f"{fmt:<11} {name:<9} {workers:>7} {nb:>7} {rate:>10.0f} {pix / 1e6:>8.1f} {batches:>8}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
