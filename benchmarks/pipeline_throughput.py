#!/usr/bin/env python
"""Pipeline throughput: decode+resize alone vs the full encode pipeline, on the same image files.

Question: does the pipeline keep up with its decoder? The full run (read, decode, resize, encode,
write, commit) should reach >= 80% of the decode-only rate with the same workers: if it doesn't,
the overhead is in the runtime (Ray Data hand-offs, encoding, writing), not in JPEG decoding.

Measured side by side in one run, Ray started once before any timing:
  (a) decode+resize only: the pipeline's own decode stage (runtime.encode.decode_shard, the same
      function and shard tasks as the job) in one process, then through Ray Data with the job's
      worker count;
  (b) the full pipeline to WebDataset;  (c) the full pipeline to Zarr (run_encode, as the job does).
Rates are steady state: (images after the first shard) / (time from the first shard's completion
to the last one's), from completion stamps (decode) and shard commit markers (full runs), so Ray
and actor start-up stay out. Wall time, start-up included, is shown too.

Reading the figures on a shared machine: Ray runs its workers at nice 15 (its worker_niceness), so
when other processes compete for the CPUs the Ray stages slow down and the in-process decode (nice
0) does not; compare the Ray stages with each other (the ratio does). On a 2-CPU node Ray Data's
autoscaling pool has also been seen to keep a single encoder actor (a CPU stays free for the write
tasks), so "workers" is an upper bound there.

    .venv/bin/python benchmarks/pipeline_throughput.py                   # data/imagenet-mini if fetched
    .venv/bin/python benchmarks/pipeline_throughput.py --input data/photos --limit 200 --size 256
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

CANDIDATES = [ROOT / "data" / "imagenet-mini" / "train", ROOT / "data" / "photos"]
TARGET = 0.80  # full pipeline / decode-only (Ray, same workers)


def generated_crops(folder: Path, count: int, seed: int = 0) -> Path:
    """`count` JPEGs cut from the bundled sample photos (random 60-100% crops, flips), ImageNet layout."""
    from PIL import Image, ImageOps

    rng = np.random.default_rng(seed)
    photos = sorted((SAMPLES_DIR / "images" / "train").glob("*/*.JPEG"))
    for i in range(count):
        src = photos[i % len(photos)]
        img = Image.open(src).convert("RGB")
        w, h = img.size
        f = rng.uniform(0.6, 1.0)
        cw, ch = max(16, int(w * f)), max(16, int(h * f))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = img.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            crop = ImageOps.mirror(crop)
        out = folder / src.parent.name / f"{src.stem}_crop{i}.JPEG"
        out.parent.mkdir(parents=True, exist_ok=True)
        crop.save(out, quality=90)
    return folder


def pick_input(arg: str | None, tmp: Path, limit: int) -> tuple[str, str]:
    if arg:
        return arg, arg
    for c in CANDIDATES:
        if c.is_dir() and any(c.iterdir()):
            return str(c), str(c.relative_to(ROOT))
    folder = generated_crops(tmp / "crops" / "train", limit)
    return str(folder), f"{limit} crops of pipeline/samples/images (generated)"


def pick_codec(arg: str | None, tmp: Path) -> tuple[str, str]:
    """--codec, else the bundled rgb-16x, else a small J=3 codec (12 latent channels, 16x)."""
    import torch

    if arg:
        return arg, arg
    try:
        load("rgb-16x")
        return "rgb-16x", "rgb-16x (bundled)"
    except CheckpointError:
        codec = build(CodecConfig(kind="2d", channels=3, J=3, latent_dim=12, Nd=32, decoder="linear"))
        with torch.no_grad():
            codec.encoder.weight.mul_(50)  # latents not all zero (the encode cost is the same)
        path = save(codec, tmp / "codec" / "small-16x", name="small-16x")
        return str(path), "small-16x (J=3, 12 latent channels, 1x1 encoder; random weights)"


def steady_rate(stamps: list[tuple[float, int]]) -> tuple[float, float]:
    """(images/s, seconds) from (completion time, images) per shard: first to last completion."""
    stamps = sorted(stamps)
    if len(stamps) < 2:
        return float("nan"), 0.0
    span = stamps[-1][0] - stamps[0][0]
    images = sum(n for _, n in stamps[1:])  # the first shard's images were done at the window's start
    return (images / span if span > 0 else float("nan")), span


def decode_timed(batch: dict, **kwargs) -> dict:
    """The pipeline's decode stage, reporting (completion time, images) instead of the pixels."""
    from pipeline.runtime.encode import decode_shard

    out = decode_shard(batch, **kwargs)
    done = time.time()
    return {
        "t": np.array([done] * len(out["payload"])),
        "n": np.array([len(p["samples"]) for p in out["payload"]]),
        "errors": np.array([len(p["errors"]) for p in out["payload"]]),
    }


class DecodeActor:
    """decode_timed in a Ray actor, as the job's decode runs in its encoder actors."""

    def __init__(self, kwargs: dict):
        import pipeline.runtime.encode  # noqa: F401  (imports done at start-up, as the job's actors do)

        self.kwargs = kwargs

    def __call__(self, batch: dict) -> dict:
        return decode_timed(batch, **self.kwargs)


def bench_decode(prep, tasks, workers: int | None) -> dict:
    """Decode-only over the shard tasks: in this process (workers=None) or through Ray Data."""
    kwargs = {
        "source": prep.source,
        "preprocessor": prep.preprocessor,
        "cache_salt": "bench",
        "timeout": 60.0,
    }
    rows = [{"shard": t.shard, "payload": {"task": t}} for t in tasks]
    started = time.perf_counter()
    if workers is None:
        stamps, errors = [], 0
        for row in rows:
            out = decode_timed(
                {"shard": np.array([row["shard"]]), "payload": np.array([row["payload"]])}, **kwargs
            )
            stamps.append((float(out["t"][0]), int(out["n"][0])))
            errors += int(out["errors"][0])
    else:
        import ray.data

        # as the job runs it: an autoscaling pool of up to `workers` actors (there fused with the encoder)
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        ds = ds.map_batches(
            DecodeActor,
            batch_size=1,
            fn_constructor_kwargs={"kwargs": kwargs},
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=workers),
        )
        out = ds.take_all()
        stamps = [(float(r["t"]), int(r["n"])) for r in out]
        errors = sum(int(r["errors"]) for r in out)
    wall = time.perf_counter() - started
    rate, span = steady_rate(stamps)
    return {
        "images": sum(n for _, n in stamps),
        "errors": errors,
        "shards": len(stamps),
        "wall": wall,
        "span": span,
        "rate": rate,
    }


def unit_costs(prep, tasks, codec: str, batch_size: int, spec) -> dict[str, float]:
    """In this process, 1 torch thread: ms per image of each stage over the first shards (the job's
    own functions). They bound the ratio: a worker that decodes and encodes can reach at most
    decode / (decode + encode + write) of the rate of a worker that only decodes."""
    import torch

    from pipeline.runtime.encode import ShardEncoder, decode_shard, write_shard

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    encoder = ShardEncoder(codec, prep.codec.hash, prep.preprocessor, batch_size, "npy", 1, "cpu")
    spent = {"decode": 0.0, "encode": 0.0, "write": 0.0}
    images = 0
    for task in tasks[:3]:
        batch = {"shard": np.array([task.shard]), "payload": np.array([{"task": task}])}
        t0 = time.perf_counter()
        decoded = decode_shard(batch, prep.source, prep.preprocessor, "bench", 60.0)
        t1 = time.perf_counter()
        encoded = encoder(decoded)
        t2 = time.perf_counter()
        write_shard(encoded, "webdataset", spec, "bench")
        t3 = time.perf_counter()
        spent["decode"] += t1 - t0
        spent["encode"] += t2 - t1
        spent["write"] += t3 - t2
        images += len(task.items)
    torch.set_num_threads(threads)
    return {k: 1000 * v / images for k, v in spent.items()}


def bench_full(cfg: EncodeConfig) -> dict:
    from pipeline.runtime import run_encode

    started = time.perf_counter()
    summary = run_encode(cfg)
    wall = time.perf_counter() - started
    markers = sorted((Path(cfg.output) / MARKERS).glob("*.json"))
    stamps = [(p.stat().st_mtime, json.loads(p.read_text())["stats"]["samples"]) for p in markers]
    rate, span = steady_rate(stamps)
    return {
        "images": summary.written,
        "errors": summary.errors,
        "shards": len(stamps),
        "wall": wall,
        "span": span,
        "rate": rate,
        "bytes": summary.bytes_written,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--input",
        default=None,
        help="image folder (default: data/imagenet-mini, data/photos, "
        "else crops generated from the bundled samples)",
    )
    parser.add_argument("--limit", type=int, default=450, help="images to use (first N of the listing)")
    parser.add_argument(
        "--size", type=int, default=256, help="target side (center crop), as the job's --size"
    )
    parser.add_argument("--shard-size", type=int, default=32, help="images per shard")
    parser.add_argument("--workers", type=int, default=None, help="Ray workers (default: Ray's CPU count)")
    parser.add_argument(
        "--codec", default=None, help="codec name or path (default: rgb-16x, else a small one)"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="samples per codec call")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repetitions; medians reported")
    args = parser.parse_args(argv)

    import ray

    from pipeline.runtime.encode import prepare_run
    from pipeline.runtime.plan import chunk

    tmp = Path(tempfile.mkdtemp(prefix="walloc-throughput-"))
    try:
        input_dir, input_note = pick_input(args.input, tmp, args.limit)
        codec, codec_note = pick_codec(args.codec, tmp)

        def cfg(fmt: str) -> EncodeConfig:
            return EncodeConfig(
                input=input_dir,
                output=str(tmp / fmt),
                format=fmt,
                codec=codec,
                size=args.size,
                crop="center",
                shard_size=args.shard_size,
                mode="overwrite",
                limit=args.limit,
                workers=args.workers,
                batch_size=args.batch_size,
                progress=False,
            )

        prep = prepare_run(cfg("webdataset"))
        tasks = chunk(prep.items, args.shard_size, 0, 0)
        exts = sorted({Path(it.uri).suffix.lower() for it in prep.items})

        from pipeline.sinks import SinkSpec

        costs = unit_costs(prep, tasks, codec, args.batch_size, SinkSpec(output=str(tmp / "units")))
        ray.init(address="local", include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        workers = args.workers or cpus
        load_before = os.getloadavg()[0]
        stages = {
            "decode+resize, 1 process": lambda: bench_decode(prep, tasks, None) | {"workers": 1},
            "decode+resize, Ray": lambda: bench_decode(prep, tasks, workers) | {"workers": workers},
            "full pipeline -> WebDataset": lambda: bench_full(cfg("webdataset")) | {"workers": workers},
            "full pipeline -> Zarr": lambda: bench_full(cfg("zarr")) | {"workers": workers},
        }
        runs: dict[str, list[dict]] = {name: [] for name in stages}
        for _ in range(args.rounds):  # interleaved, so that a burst of load hits every stage alike
            for name, run in stages.items():
                runs[name].append(run())
        results = {
            name: rs[0] | {k: float(np.median([r[k] for r in rs])) for k in ("wall", "span", "rate")}
            for name, rs in runs.items()
        }
        load_after = os.getloadavg()[0]
        ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    base = results["decode+resize, Ray"]["rate"]
    print(
        f"inputs   {input_note}: {len(prep.items)} files ({', '.join(exts)}), {len(tasks)} shards of "
        f"{args.shard_size}; --size {args.size} (center crop)"
    )
    print(f"codec    {codec_note}; batch {args.batch_size}")
    print(
        f"machine  {os.cpu_count()} CPUs ({cpus} for Ray), load {load_before:.1f} -> {load_after:.1f} (1 min)"
    )
    bound = costs["decode"] / sum(costs.values())
    print(
        f"costs    in-process, 1 thread: decode+resize {costs['decode']:.1f}, encode {costs['encode']:.1f}, "
        f"write {costs['write']:.2f} ms/image: full/decode-only can reach at most {bound:.0%} on CPUs"
    )
    print(
        "rate     images after the first shard / (last - first shard completion): start-up excluded; "
        f"median of {args.rounds} interleaved round(s)\n"
    )
    print("| stage | workers | images | errors | wall s | first->last shard s | images/s | vs decode (Ray) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(
            f"| {name} | {r['workers']} | {r['images']} | {r['errors']} | {r['wall']:.1f} | {r['span']:.1f} "
            f"| {r['rate']:.1f} | {r['rate'] / base:.0%} |"
        )
    worst = (
        min(results["full pipeline -> WebDataset"]["rate"], results["full pipeline -> Zarr"]["rate"]) / base
    )
    verdict = "meets" if worst >= TARGET else "misses"
    print(
        f"\nfull / decode-only (Ray, same workers): {worst:.0%} at worst, {verdict} the {TARGET:.0%} target"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
