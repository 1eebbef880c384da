#!/usr/bin/env python
"""The encode pipeline against the script a team would write instead, on the same files and cores.

    (a) bare: a plain `multiprocessing` script, one process per core, each with the project's own
        decode (pipeline.preprocess.image.decode_image: same policy) and the same codec; decode +
        encode + the run's latent format (npy / entropy-coded bytes), in memory, nothing written;
    (b) the pipeline (run_encode, as `jobs/encode_imagenet.py` runs it) to WebDataset on local disk;
    (c) the same to Zarr;
    (d) `webdataset@cluster`: (b) joining a Ray started beforehand (`ray start --head`), as a job
        submitted to a running cluster does: Ray's own start-up is then not part of the run.

Each arm runs in a fresh subprocess, so (b) and (c) include starting a local Ray, listing, loading
the codec in every worker and committing the run, as a user's run does. Arms alternate over
--rounds. Printed side by side:

- img/s (steady state): images after the first shard / time from the first shard's commit to the
  last one's (for (a): the same over its own chunks of --shard-size images);
- wall s: the whole subprocess, interpreter start, imports and Ray start-up included;
- CPU-s/img: busy CPU time of the whole machine (/proc/stat) over the run, per image;
- idle %: the share of the machine's CPU time left idle (/proc/stat) while encoding: from the
  first worker's start (a: pool start; b, c: Ray up) to the last commit;
- first shard: when the first shard was committed, as a share of the run's wall time.

The machine is shared: other processes' load shows in CPU-s and idle; compare the arms (ratios).

    .venv/bin/python benchmarks/pipeline_vs_bare.py                  # 4,000 JPEGs of ~500x375
    .venv/bin/python benchmarks/pipeline_vs_bare.py --count 800 --rounds 1
    .venv/bin/python benchmarks/pipeline_vs_bare.py --input data/imagenet-mini/train
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import DEFAULT_IMAGE_CODEC, SAMPLES_DIR  # noqa: E402

TARGETS = {"steady": 0.85, "wall": 1.3, "idle": 0.10, "first_shard": 0.15}


# --- the corpus -----------------------------------------------------------------------------------


def make_corpus(folder: Path, count: int, size: tuple[int, int] = (500, 375), seed: int = 0) -> Path:
    """`count` JPEGs of `size` (ImageNet's typical 500x375), random crops of the bundled photos."""
    from PIL import Image, ImageOps

    rng = np.random.default_rng(seed)
    photos = [Image.open(p).convert("RGB") for p in sorted((SAMPLES_DIR / "images").glob("*/*/*.JPEG"))]
    for i in range(count):
        img = photos[i % len(photos)]
        w, h = img.size
        f = rng.uniform(0.5, 1.0)
        cw, ch = max(32, int(w * f)), max(32, int(h * f))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = img.crop((x, y, x + cw, y + ch)).resize(size, Image.BICUBIC)
        if rng.random() < 0.5:
            crop = ImageOps.mirror(crop)
        out = folder / f"n{i % 10:08d}" / f"img_{i:06d}.JPEG"
        out.parent.mkdir(parents=True, exist_ok=True)
        crop.save(out, quality=90)
    return folder


# --- CPU accounting (/proc/stat) ------------------------------------------------------------------


def cpu_times() -> tuple[float, float]:
    """(busy, idle) seconds of the whole machine since boot (idle includes iowait)."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / tick, idle / tick


class CpuSampler:
    """(wall time, busy, idle) every `every` s in a thread, to cut out any window of the run later."""

    def __init__(self, every: float = 0.1):
        self.every, self.samples, self._stop = every, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), *cpu_times()))
            self._stop.wait(self.every)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.time(), *cpu_times()))

    def window(self, start: float, end: float) -> tuple[float, float]:
        """(busy, idle) CPU-seconds between the samples nearest `start` and `end`."""

        def at(t: float):
            return min(self.samples, key=lambda s: abs(s[0] - t))

        a, b = at(start), at(end)
        return b[1] - a[1], b[2] - a[2]


def steady_rate(stamps: list[tuple[float, int]]) -> tuple[float, float]:
    """(images/s, seconds) from (completion time, images) per shard: first completion to the last."""
    stamps = sorted(stamps)
    if len(stamps) < 2 or stamps[-1][0] <= stamps[0][0]:
        return float("nan"), 0.0
    span = stamps[-1][0] - stamps[0][0]
    return sum(n for _, n in stamps[1:]) / span, span


# --- (a) the plain multiprocessing script ---------------------------------------------------------


def _bare_worker(args: tuple) -> list[tuple[float, int]]:
    """One process: decode + encode + latent format for its files; (completion time, n) per chunk."""
    files, codec_ref, size, latent_format, chunk = args
    import torch

    from pipeline.codec import load
    from pipeline.preprocess.image import ImagePolicy, decode_image, to_codec_input

    torch.set_num_threads(1)
    codec = load(codec_ref).freeze()
    policy = ImagePolicy(
        size=size, crop="center", channels=codec.config.channels, multiple=codec.config.block
    )
    stamps, sink_bytes = [], 0
    for c in range(0, len(files), chunk):
        part = files[c : c + chunk]
        pixels = [decode_image(Path(f).read_bytes(), policy).array for f in part]
        for b in range(0, len(pixels), 64):
            x = torch.from_numpy(np.stack([to_codec_input(p) for p in pixels[b : b + 64]]))
            with torch.no_grad():
                z = codec.encode(x)
            for zi in z:
                if latent_format == "npy":
                    buf = io.BytesIO()
                    np.save(buf, zi.numpy())
                    sink_bytes += buf.tell()
                else:
                    sink_bytes += len(codec.to_bytes(zi, method=latent_format))
        stamps.append((time.time(), len(part)))
    return stamps


def run_bare(files: list[str], codec: str, size: int, latent_format: str, chunk: int, procs: int) -> dict:
    started = time.time()
    shares = [files[i::procs] for i in range(procs)]
    ctx = multiprocessing.get_context("spawn")  # as a fresh script's workers: imports paid per process
    with ctx.Pool(procs) as pool:
        stamps = sum(pool.map(_bare_worker, [(s, codec, size, latent_format, chunk) for s in shares]), [])
    return {"images": len(files), "stamps": stamps, "encode_started": started, "first_commit": min(stamps)[0]}


# --- (b, c) the pipeline --------------------------------------------------------------------------


def run_pipeline(
    input_dir: str,
    output: str,
    fmt: str,
    codec: str,
    size: int,
    latent_format: str,
    chunk: int,
    address: str | None = None,
):
    from pipeline.config import EncodeConfig, ImageSettings, RayConfig
    from pipeline.manifest import MARKERS
    from pipeline.runtime import run_encode
    from pipeline.sinks import SinkSpec

    started = time.time()
    cfg = EncodeConfig(
        input=input_dir,
        sink=SinkSpec(output=output, format=fmt, latent_format=latent_format, shard_size=chunk),
        codec=codec,
        image=ImageSettings(size=size),
        mode="overwrite",
        progress=False,
        ray=RayConfig(address=address),
    )
    s = run_encode(cfg)
    ended = time.time()
    markers = sorted(Path(output, MARKERS).glob("*.json"))
    stamps = [(m.stat().st_mtime, json.loads(m.read_text())["stats"]["samples"]) for m in markers]
    assert not s.failed_shards and s.written == s.inputs, s.format()
    return {
        "images": s.written,
        "stamps": stamps,
        "encode_started": ended - s.encode_seconds,
        "first_commit": started + s.first_commit_seconds,
        "bytes": s.bytes_written,
    }


# --- the side-by-side run -------------------------------------------------------------------------


def child(args: argparse.Namespace) -> int:
    """One arm, in this (fresh) process; prints its JSON on the last line."""
    files = sorted(str(p) for p in Path(args.input).rglob("*") if p.suffix.lower() in (".jpeg", ".jpg"))
    if args.arm == "bare":
        out = run_bare(files, args.codec, args.size, args.latent_format, args.shard_size, os.cpu_count() or 1)
    else:
        fmt = args.arm.split("@")[0]
        dest = Path(args.tmp) / f"out-{fmt}"
        out = run_pipeline(
            args.input,
            str(dest),
            fmt,
            args.codec,
            args.size,
            args.latent_format,
            args.shard_size,
            args.address,
        )
        shutil.rmtree(dest, ignore_errors=True)
    print(json.dumps(out))
    return 0


def measure(arm: str, args: argparse.Namespace, input_dir: str, tmp: str) -> dict:
    """One arm in a fresh process. `<format>@cluster`: the job joins a Ray cluster started before it
    (`ray start`, as `ray job submit` to a running cluster does), so Ray's start-up is not in it."""
    cmd = [sys.executable, __file__, "--child", "--arm", arm, "--input", input_dir, "--tmp", tmp]
    cmd += ["--codec", args.codec, "--size", str(args.size), "--latent-format", args.latent_format]
    cmd += ["--shard-size", str(args.shard_size)]
    cluster = contextlib.nullcontext((None, None))
    if arm.endswith("@cluster"):
        sys.path.insert(0, str(ROOT / "tests" / "pipeline"))
        from ray_cluster import local_cluster

        cluster = local_cluster(nodes=1, cpus_per_node=os.cpu_count() or 1)
    with cluster as (address, env), CpuSampler() as cpu:
        if address:
            cmd += ["--address", address]
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
        t1 = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"{arm} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    end = max(t for t, _ in r["stamps"])
    busy, idle = cpu.window(r["encode_started"], end)
    all_busy, _ = cpu.window(t0, t1)
    return {
        "arm": arm,
        "images": r["images"],
        "steady": steady_rate([tuple(s) for s in r["stamps"]])[0],
        "wall": t1 - t0,
        "cpu_per_image": all_busy / r["images"],
        "idle": idle / (busy + idle) if busy + idle > 0 else float("nan"),
        "first_shard": (r["first_commit"] - t0) / (t1 - t0),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", default=None, help="a folder of JPEGs (default: --count generated ones)")
    p.add_argument("--count", type=int, default=4000, help="generated JPEGs when no --input")
    p.add_argument("--codec", default=DEFAULT_IMAGE_CODEC)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--latent-format", default="npy")
    p.add_argument("--shard-size", type=int, default=250)
    p.add_argument("--rounds", type=int, default=1, help="alternate the arms this many times")
    p.add_argument(
        "--arms",
        default="bare,webdataset,zarr,webdataset@cluster",
        help="bare, webdataset, zarr; <format>@cluster joins a Ray started beforehand",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--arm", help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    p.add_argument("--address", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)

    with tempfile.TemporaryDirectory() as tmp:
        if args.input:
            input_dir, what = args.input, args.input
        else:
            input_dir = str(make_corpus(Path(tmp) / "corpus", args.count))
            what = f"{args.count} JPEGs, 500x375 crops of the bundled photos (generated)"
        arms = args.arms.split(",")
        rows: dict[str, list[dict]] = {a: [] for a in arms}
        for _ in range(args.rounds):
            for arm in arms:
                rows[arm].append(measure(arm, args, input_dir, tmp))
                print(f"  {arm}: {rows[arm][-1]}", flush=True)

    med = {
        a: {k: float(np.median([r[k] for r in rs])) for k in rs[0] if k != "arm"} for a, rs in rows.items()
    }
    print(
        f"\ninputs: {what}; codec {args.codec}, {args.size}x{args.size}, latents {args.latent_format}, "
        f"shards of {args.shard_size}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}; "
        f"medians of {args.rounds} round(s)"
    )
    print(f"{'':12}{'img/s':>9}{'wall s':>9}{'CPU-s/img':>11}{'idle %':>8}{'1st shard':>11}")
    for a, m in med.items():
        print(
            f"{a:12}{m['steady']:9.1f}{m['wall']:9.1f}{m['cpu_per_image'] * 1000:9.1f}ms"
            f"{m['idle'] * 100:8.1f}{m['first_shard'] * 100:10.1f}%"
        )
    if "bare" in med:
        base = med["bare"]
        for a in (x for x in med if x != "bare"):
            m = med[a]
            verdicts = [
                (
                    f"steady {m['steady'] / base['steady']:.2f}x bare",
                    m["steady"] / base["steady"] >= TARGETS["steady"],
                ),
                (f"wall {m['wall'] / base['wall']:.2f}x bare", m["wall"] / base["wall"] <= TARGETS["wall"]),
                (f"idle {m['idle'] * 100:.1f}%", m["idle"] < TARGETS["idle"]),
                (f"first shard at {m['first_shard'] * 100:.0f}%", m["first_shard"] <= TARGETS["first_shard"]),
            ]
            print(f"{a}: " + "; ".join(f"{t} ({'met' if ok else 'MISSED'})" for t, ok in verdicts))
    if args.json:
        args.json.write_text(json.dumps({"inputs": what, "rounds": rows, "medians": med}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
