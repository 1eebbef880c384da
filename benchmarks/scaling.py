#!/usr/bin/env python
"""Scaling: encode throughput with 1 and 2 encoder workers over the same inputs, Ray started once.

Why: the cluster plan (docs/scaling.md) needs measured per-worker rates, not guesses. Each run
encodes the same inputs into a fresh output (--mode overwrite) with run_encode, as the job does.
Two measures: wall-clock throughput (what a user sees; on a shared machine it moves with the other
processes' load, printed alongside) and CPU seconds per sample of the Ray worker processes (psutil;
robust to contention: if it stays flat from 1 to N workers, throughput scales with the cores that
are really free). Worker processes are warmed up first (Ray keeps idle workers with torch imported).
Shard commit times (marker mtimes, seconds after the start) show when results became durable.

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
    """In-process (no Ray) CPU ms per image of decode and of encode (1 torch thread): the unit costs."""
    from pipeline.runtime.encode import ShardEncoder, decode_shard, prepare_run
    from pipeline.runtime.plan import chunk

    prep = prepare_run(cfg)
    task = chunk(prep.items, shard_size, 0, 0)[0]
    batch = {"shard": np.array([0]), "payload": np.array([{"task": task}])}
    t = time.process_time()  # CPU time: robust to other processes' load
    decoded = decode_shard(batch, prep.source, prep.preprocessor, "bench", 60.0)
    decode_s = time.process_time() - t
    encoder = ShardEncoder(cfg.codec, prep.codec.hash, prep.preprocessor, cfg.batch_size, "npy", 1, "cpu")
    t = time.process_time()
    encoder(decoded)
    encode_s = time.process_time() - t
    n = len(task.items)
    return {"decode_ms_per_image": 1000 * decode_s / n, "encode_ms_per_image": 1000 * encode_s / n}


def marker_times(output: Path) -> list[float]:
    return sorted(p.stat().st_mtime for p in (output / MARKERS).glob("*.json"))


def ray_worker_cpu() -> dict[int, float]:
    """CPU seconds (user + system) so far of every Ray worker process (titles start with ray::)."""
    import psutil

    out = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmd = proc.info["cmdline"] or []
            if cmd and cmd[0].startswith("ray::"):
                t = proc.cpu_times()
                out[proc.pid] = t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def run_once(cfg: EncodeConfig) -> dict[str, float]:
    """One run_encode: wall time, worker CPU time, when its shards were committed."""
    from pipeline.runtime import run_encode

    load_before = os.getloadavg()[0]
    cpu_before = ray_worker_cpu()
    started, t = time.time(), time.perf_counter()
    summary = run_encode(cfg)
    wall = time.perf_counter() - t
    cpu_after = ray_worker_cpu()
    worker_cpu = sum(v - cpu_before.get(pid, 0.0) for pid, v in cpu_after.items())
    times = marker_times(Path(cfg.output))
    return {
        "workers": cfg.workers,
        "samples": summary.written,
        "errors": summary.errors,
        "shards": len(times),
        "wall_s": wall,
        "rate": summary.written / wall,
        "worker_cpu_s": worker_cpu,
        "cpu_ms_per_sample": 1000 * worker_cpu / max(1, summary.written),
        "first_commit_s": times[0] - started,
        "last_commit_s": times[-1] - started,
        "bytes_written": summary.bytes_written,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


MEDIAN_KEYS = (
    "wall_s",
    "rate",
    "cpu_ms_per_sample",
    "first_commit_s",
    "last_commit_s",
    "load_before",
    "load_after",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="encoder actor counts")
    parser.add_argument("--shard-size", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=15, help="copies of the samples (no imagenet-mini)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions; medians reported")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="walloc-scaling-"))
    try:
        input_dir, input_note = pick_inputs(tmp, args.repeat)
        codec, codec_note = pick_codec(tmp)

        def cfg(workers: int, name: str, limit: int | None) -> EncodeConfig:
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

        costs = stage_costs(cfg(1, "costs", None), args.shard_size)
        import ray

        ray.init(include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        cpus = ray.cluster_resources().get("CPU", 0)
        runs = []
        for r in range(args.rounds):
            for w in args.workers:
                run_once(cfg(w, f"w{w}-r{r}-warm", 2 * w * args.shard_size))  # w warm worker processes
                runs.append(run_once(cfg(w, f"w{w}-r{r}", None)))
        ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rows = []
    for w in args.workers:
        mine = [r for r in runs if r["workers"] == w]
        rows.append(mine[0] | {k: float(np.median([r[k] for r in mine])) for k in MEDIAN_KEYS})
    base = rows[0]["rate"]
    print(f"inputs  {input_note}; codec {codec_note}")
    print(f"machine {os.cpu_count()} CPUs ({cpus:g} for Ray); shard size {args.shard_size}")
    print(
        f"unit costs (in-process CPU time, 1 thread): decode {costs['decode_ms_per_image']:.1f} ms/image, "
        f"encode {costs['encode_ms_per_image']:.1f} ms/image"
    )
    print(f"medians of {args.rounds} interleaved rounds, warm worker processes")
    header = ["workers", "samples", "wall s", "samples/s", "speedup", "worker CPU ms/sample"]
    print("| " + " | ".join([*header, "1st / last commit s", "load 1m"]) + " |")
    print("|" + "---:|" * (len(header) + 2))
    for r in rows:
        print(
            f"| {r['workers']} | {r['samples']} | {r['wall_s']:.1f} | {r['rate']:.1f} "
            f"| {r['rate'] / base:.2f}x "
            f"| {r['cpu_ms_per_sample']:.0f} | {r['first_commit_s']:.1f} / {r['last_commit_s']:.1f} "
            f"| {r['load_before']:.1f} -> {r['load_after']:.1f} |"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        result = {"inputs": input_note, "codec": codec_note, "cpus": cpus, "unit_costs": costs}
        result |= {"medians": rows, "runs": runs}
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
