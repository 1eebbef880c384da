#!/usr/bin/env python
"""Soak: many small synthetic images through the full pipeline; is memory flat, what is the rate?

A registered source synthesizes every input on the fly (a 32x32 PNG: gradients, stripes and noise
seeded by the item's index, so nothing is read from disk and the inputs cost no preparation), and
the real job runs on a local Ray: run_encode -> decode -> encode (bundled rgb-16x-klt) -> WebDataset
shards -> markers -> manifest. A monitor thread samples the driver and every process below it
(the Ray processes the driver started) from /proc every 0.5 s, and records a checkpoint each time
another --checkpoint-every samples have been committed (shard markers on disk):

    samples  elapsed | driver RSS, peak | workers: count, largest RSS, largest peak, sum | Ray infra

Peaks are the kernel's VmHWM (a process's high-water mark), so spikes between samples count.
Workers are the encoder actors (read + decode + encode) and the writer's task workers; "Ray infra"
is the rest (raylet, GCS, Ray's agents and internal actors). RSS includes the pages of Ray's shared
object store a process has touched. Flat memory means the figures at 10k and at the end are alike;
the driver holds the listing and the plan (O(inputs), by design: see docs/soak.md).

    .venv/bin/python benchmarks/soak.py                         # 100k samples
    .venv/bin/python benchmarks/soak.py --samples 20000 --json out/soak-20k.json

Linux only (/proc). Figures depend on the machine and on what else runs on it: say so with them.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.registry import SOURCES  # noqa: E402
from pipeline.sources.base import Source, SourceItem  # noqa: E402

CLASSES = 10


class SyntheticImages(Source):
    """`count` 32x32 (or --side) RGB PNGs made from their index: a registered source for benchmarks.

    Defined in the benchmark's __main__, so Ray pickles the class by value into its workers."""

    registry_name = "synthetic-images"
    modality = "image"

    def __init__(self, root: str, count: int = 1000, side: int = 32):
        self.root, self.count, self.side = root, int(count), int(side)

    def list_items(self) -> list[SourceItem]:
        return [
            SourceItem(key=f"img{i:08d}", uri=f"synthetic://{i}", label=i % CLASSES)
            for i in range(self.count)
        ]

    def read_bytes(self, item: SourceItem) -> bytes:
        from PIL import Image

        i = int(item.uri.rsplit("/", 1)[1])
        rng = np.random.default_rng(i)
        n = self.side
        y, x = np.mgrid[0:n, 0:n].astype(np.float32) / n
        angle = rng.uniform(0, np.pi)
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 6) * (x * np.cos(angle) + y * np.sin(angle)))
        base = rng.uniform(0, 1, size=3)
        img = base[None, None, :] * 0.6 + stripes[..., None] * rng.uniform(0.2, 0.6, size=3)[None, None, :]
        img += rng.normal(0, 0.05, size=img.shape)
        buf = io.BytesIO()
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(buf, format="PNG")
        return buf.getvalue()

    def label_map(self) -> dict[str, int]:
        return {f"class{c}": c for c in range(CLASSES)}

    def describe(self) -> dict[str, Any]:
        return {"kind": self.registry_name, "count": self.count, "side": self.side}


# --- /proc sampling ---------------------------------------------------------------------------


def _status_kb(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode(errors="replace").strip()


def group_of(title: str) -> str:
    """workers: the pipeline's Ray workers, encoder actors (`ray::MapWorker(...)`) and writer task
    workers (`ray::MapBatches(write_shard)`), `ray::IDLE` between tasks (Ray retitles a process as
    its work changes, so the two are reported together); infra: the rest (raylet, GCS, Ray's agents
    and internal actors)."""
    if title.startswith(("ray::MapWorker", "ray::MapBatches", "ray::IDLE")):
        return "workers"
    return "infra"


class Monitor(threading.Thread):
    """Samples memory every `interval` s; a checkpoint each time `every` more samples are committed."""

    def __init__(self, markers: Path, shard_size: int, total: int, every: int, interval: float = 0.5):
        super().__init__(name="soak-monitor", daemon=True)
        self.markers, self.shard_size, self.total = markers, shard_size, total
        self.every, self.interval = every, interval
        self.stop = threading.Event()
        self.started = time.perf_counter()
        self.rss_kb: dict[int, int] = {}  # live processes below the driver, at the last sample
        self.peak_kb: dict[int, int] = {}  # pid -> VmHWM (processes that exited keep theirs)
        self.title: dict[int, str] = {}
        self.checkpoints: list[dict[str, Any]] = []
        self.next_checkpoint = every

    def committed(self) -> int:
        try:
            shards = sum(1 for n in os.listdir(self.markers) if n.endswith(".json"))
        except FileNotFoundError:
            return 0
        return min(self.total, shards * self.shard_size)

    def sample(self) -> None:
        rss: dict[int, int] = {}
        for pid in _descendants(os.getpid()):
            try:
                kb = _status_kb(pid)
                title = _cmdline(pid).split(" ", 1)[0]
            except (OSError, ValueError):
                continue  # exited meanwhile
            rss[pid] = kb.get("VmRSS", 0)
            self.title[pid] = title
            self.peak_kb[pid] = max(self.peak_kb.get(pid, 0), kb.get("VmHWM", 0))
        self.rss_kb = rss

    def snapshot(self, samples: int) -> dict[str, Any]:
        me = _status_kb(os.getpid())
        row: dict[str, Any] = {
            "samples": samples,
            "elapsed_s": round(time.perf_counter() - self.started, 1),
            "driver_rss_mb": round(me["VmRSS"] / 1024, 1),
            "driver_peak_mb": round(me["VmHWM"] / 1024, 1),
        }
        for group in ("workers", "infra"):
            live = [kb for pid, kb in self.rss_kb.items() if group_of(self.title[pid]) == group]
            peaks = [kb for pid, kb in self.peak_kb.items() if group_of(self.title[pid]) == group]
            row[f"{group}_processes"] = len(live)
            row[f"{group}_rss_max_mb"] = round(max(live, default=0) / 1024, 1)
            row[f"{group}_peak_max_mb"] = round(max(peaks, default=0) / 1024, 1)
            row[f"{group}_rss_sum_mb"] = round(sum(live) / 1024, 1)
        return row

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.sample()
            done = self.committed()
            while done >= self.next_checkpoint and self.next_checkpoint < self.total:
                self.checkpoints.append(self.snapshot(self.next_checkpoint))
                self.next_checkpoint += self.every


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--checkpoint-every", type=int, default=10_000)
    parser.add_argument("--side", type=int, default=32, help="synthetic image side (pixels)")
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--format", choices=["webdataset", "zarr"], default="webdataset")
    parser.add_argument("--codec", default="rgb-16x-klt")
    parser.add_argument("--workers", type=int, default=None, help="encoder actors (default: one per CPU)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs Ray may use (default: all)")
    parser.add_argument("--output", default=None, help="output root (default: a temporary folder, removed)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    import ray

    from pipeline.config import EncodeConfig, ImageSettings, RayConfig
    from pipeline.manifest import MARKERS
    from pipeline.runtime import run_encode
    from pipeline.sinks import SinkSpec

    SOURCES[SyntheticImages.registry_name] = SyntheticImages
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    output = Path(args.output) if args.output else tmp / "out"
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, logging_level="ERROR")
    cfg = EncodeConfig(
        input=f"synthetic://{args.samples}",
        sink=SinkSpec(output=str(output), format=args.format, shard_size=args.shard_size),
        source=SyntheticImages.registry_name,
        source_options={"count": args.samples, "side": args.side},
        codec=args.codec,
        image=ImageSettings(size=args.side, crop="center"),
        mode="overwrite",
        ray=RayConfig(workers=args.workers),
        progress=False,
    )
    monitor = Monitor(output / MARKERS, args.shard_size, args.samples, args.checkpoint_every)
    print(
        f"soak: {args.samples:,} synthetic {args.side}x{args.side} PNGs, shards of {args.shard_size}, "
        f"{args.format}, codec {args.codec}, Ray CPUs {ray.cluster_resources().get('CPU')}, "
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    monitor.start()
    try:
        summary = run_encode(cfg)
    finally:
        monitor.stop.set()
        monitor.join()
        monitor.sample()
    final = monitor.snapshot(summary.written + summary.errors)
    final["elapsed_s"] = round(summary.seconds, 1)
    ray.shutdown()
    if not args.output:
        shutil.rmtree(tmp, ignore_errors=True)

    rows = monitor.checkpoints + [final]
    print(
        f"{'samples':>8} {'elapsed s':>9} | {'driver RSS':>10} {'peak':>6} | {'workers':>7} "
        f"{'RSS max':>7} {'peak max':>8} {'RSS sum':>7} | {'Ray infra RSS':>13}   (MB)"
    )
    for r in rows:
        print(
            f"{r['samples']:>8,} {r['elapsed_s']:>9.1f} | {r['driver_rss_mb']:>10.1f} "
            f"{r['driver_peak_mb']:>6.0f} | {r['workers_processes']:>7} {r['workers_rss_max_mb']:>7.1f} "
            f"{r['workers_peak_max_mb']:>8.1f} {r['workers_rss_sum_mb']:>7.0f} | "
            f"{r['infra_rss_sum_mb']:>13.1f}"
        )
    print("processes below the driver at the end (pid, title, RSS MB, peak MB):")
    for pid, kb in sorted(monitor.rss_kb.items()):
        title = monitor.title[pid]
        print(f"  {pid:>8} {title[:50]:<50} {kb / 1024:>7.1f} {monitor.peak_kb[pid] / 1024:>7.1f}")
    rates = []
    for a, b in zip(rows, rows[1:], strict=False):
        if b["elapsed_s"] > a["elapsed_s"]:
            rates.append((b["samples"] - a["samples"]) / (b["elapsed_s"] - a["elapsed_s"]))
    print(summary.format())
    print(
        f"rate: {summary.samples_per_s:.0f} samples/s over the whole run (start-up included)"
        + (f"; between checkpoints {min(rates):.0f}-{max(rates):.0f} samples/s" if rates else "")
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps(
                {
                    "samples": args.samples,
                    "side": args.side,
                    "shard_size": args.shard_size,
                    "format": args.format,
                    "codec": args.codec,
                    "cpus": os.cpu_count(),
                    "checkpoints": rows,
                    "samples_per_s": summary.samples_per_s,
                    "checkpoint_rates": rates,
                    "inputs": summary.inputs,
                    "written": summary.written,
                    "errors": summary.errors,
                    "failed_shards": summary.failed_shards,
                },
                indent=1,
            )
        )
    return 1 if summary.failed_shards or summary.written + summary.errors != args.samples else 0


if __name__ == "__main__":
    sys.exit(main())
