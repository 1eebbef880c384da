#!/usr/bin/env python
"""Scaling: encode throughput with 1 and 2 encoder workers over the same inputs, Ray started once.

Why: the cluster plan (docs/scaling.md) needs measured per-worker rates, not guesses. Each run
encodes the same inputs into a fresh output (--mode overwrite) with run_encode, as the job does.
Throughput is timed from the first to the last committed shard (marker mtimes), which leaves out
actor start-up (codec load, imports) that a long run amortises; wall time is printed too.

    .venv/bin/python benchmarks/scaling.py                    # data/imagenet-mini/train if present
    .venv/bin/python benchmarks/scaling.py --workers 1 2 4 --shard-size 20 --json out/scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.codec import CheckpointError, CodecConfig, build, load, save  # noqa: E402
from pipeline.config import SAMPLES_DIR, EncodeConfig  # noqa: E402
from pipeline.manifest import MARKERS  # noqa: E402

IMAGENET_MINI = ROOT / "data" / "imagenet-mini" / "train"


def pick_inputs(tmp: Path, repeat: int) -> tuple[str, str]:
    """(input folder, description): imagenet-mini if fetched, else the bundled samples repeated."""
    if IMAGENET_MINI.is_dir() and any(IMAGENET_MINI.iterdir()):
        return str(IMAGENET_MINI), "data/imagenet-mini/train"
    src = SAMPLES_DIR / "images" / "train"
    dst = tmp / "inputs" / "train"
    for k in range(repeat):
        for f in src.rglob("*.JPEG"):
            target = dst / f.parent.name / f"{f.stem}_r{k}{f.suffix}"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(f, target)
    return str(dst), f"pipeline/samples/images x{repeat}"


def pick_codec(tmp: Path) -> tuple[str, str]:
    """The bundled rgb-16x if present, else a small 2-D codec (J=3, 12 latent channels: 16x)."""
    try:
        load("rgb-16x")
        return "rgb-16x", "rgb-16x (bundled)"
    except CheckpointError:
        config = CodecConfig(kind="2d", channels=3, J=3, latent_dim=12, Nd=32, decoder="linear")
        path = save(build(config), tmp / "codec" / "small-16x", name="small-16x")
        return str(path), "small-16x (J=3, latent_dim=12, linear decoder; built, random weights)"


def stage_costs(cfg: EncodeConfig, shard_size: int) -> dict[str, float]:
    """In-process (no Ray) ms per image of decode and of encode (1 torch thread): the unit costs."""
    from pipeline.runtime.encode import ShardEncoder, decode_shard, prepare_run
    from pipeline.runtime.plan import chunk

    prep = prepare_run(cfg)
    task = chunk(prep.items, shard_size, 0, 0)[0]
    batch = {"shard": np.array([0]), "payload": np.array([{"task": task}])}
    t = time.perf_counter()
    decoded = decode_shard(batch, prep.source, prep.preprocessor, "bench", 60.0)
    decode_s = time.perf_counter() - t
    encoder = ShardEncoder(cfg.codec, prep.codec.hash, prep.preprocessor, cfg.batch_size, "npy", 1, "cpu")
    t = time.perf_counter()
    encoder(decoded)
    encode_s = time.perf_counter() - t
    n = len(task.items)
    return {"decode_ms_per_image": 1000 * decode_s / n, "encode_ms_per_image": 1000 * encode_s / n}


def marker_times(output: Path) -> list[float]:
    return sorted(p.stat().st_mtime for p in (output / MARKERS).glob("*.json"))


def run_once(cfg: EncodeConfig) -> dict[str, float]:
    from pipeline.runtime import run_encode

    load_before = os.getloadavg()[0]
    t = time.perf_counter()
    summary = run_encode(cfg)
    wall = time.perf_counter() - t
    times = marker_times(Path(cfg.output))
    shards = len(times)
    per_shard = summary.written / shards if shards else 0.0
    # each worker's first shard lands at about the same time: count from the w-th commit on
    w = min(cfg.workers or 1, shards - 1)
    span = times[-1] - times[w - 1] if shards > w else 0.0
    steady = (shards - w) * per_shard / span if span > 0 else 0.0
    return {
        "workers": cfg.workers,
        "samples": summary.written,
        "errors": summary.errors,
        "shards": shards,
        "wall_s": wall,
        "wall_samples_per_s": summary.written / wall,
        "steady_samples_per_s": steady,
        "bytes_written": summary.bytes_written,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


def _median_row(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = ("wall_s", "wall_samples_per_s", "steady_samples_per_s", "load_before", "load_after")
    return runs[0] | {k: float(np.median([r[k] for r in runs])) for k in keys}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="encoder actor counts")
    parser.add_argument("--shard-size", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=15, help="copies of the samples (no imagenet-mini)")
    parser.add_argument("--limit", type=int, default=None, help="first N inputs only")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; medians reported")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="walloc-scaling-"))
    try:
        input_dir, input_note = pick_inputs(tmp, args.repeat)
        codec, codec_note = pick_codec(tmp)

        def cfg(workers: int, name: str, limit: int | None = args.limit) -> EncodeConfig:
            return EncodeConfig(
                input=input_dir,
                output=str(tmp / name),
                codec=codec,
                shard_size=args.shard_size,
                mode="overwrite",
                limit=limit,
                workers=workers,
                progress=False,
            )

        costs = stage_costs(cfg(1, "costs"), args.shard_size)
        import ray

        ray.init(include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        cpus = ray.cluster_resources().get("CPU", 0)
        run_once(cfg(1, "warmup", limit=2 * args.shard_size))  # worker processes, imports: paid once
        runs = [run_once(cfg(w, f"w{w}-r{r}")) for r in range(args.rounds) for w in args.workers]
        ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rows = [_median_row([r for r in runs if r["workers"] == w]) for w in args.workers]
    base = rows[0]["steady_samples_per_s"] or 1.0
    print(f"inputs  {input_note}; codec {codec_note}")
    print(f"machine {os.cpu_count()} CPUs ({cpus:g} for Ray); shard size {args.shard_size}")
    print(
        f"unit costs (in-process, 1 thread): decode {costs['decode_ms_per_image']:.1f} ms/image, "
        f"encode {costs['encode_ms_per_image']:.1f} ms/image"
    )
    print(f"medians of {args.rounds} interleaved rounds; steady = first to last shard commit")
    print("| workers | samples | shards | wall s | wall samples/s | steady samples/s | speedup | load 1m |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['workers']} | {r['samples']} | {r['shards']} | {r['wall_s']:.1f} "
            f"| {r['wall_samples_per_s']:.1f} | {r['steady_samples_per_s']:.1f} "
            f"| {r['steady_samples_per_s'] / base:.2f}x | {r['load_before']:.1f} -> {r['load_after']:.1f} |"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        result = {"inputs": input_note, "codec": codec_note, "cpus": cpus, "unit_costs": costs}
        result |= {"medians": rows, "runs": runs}
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
