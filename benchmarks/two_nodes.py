#!/usr/bin/env python
"""One node against two: the same job on a local Ray cluster of 1 and of 2 nodes (1 CPU each).

Each cluster is real (`ray start --head --num-cpus 1` [+ `ray start --address ... --num-cpus 1`],
token authentication on: tests/pipeline/ray_cluster.py); the job runs as a user runs it, with
`--address`. Printed: img/s (whole job, cluster already up), CPU-seconds per image (/proc/stat, the
whole machine), shards per node, and whether both outputs are byte-identical. On the 2-core project
machine the two nodes share its two cores, so this shows that work spreads and what it costs per
image, not a cluster's speed-up.

    .venv/bin/python benchmarks/two_nodes.py --count 1000
"""

from __future__ import annotations

import argparse
import filecmp
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests" / "pipeline"))

from pipeline_vs_bare import CpuSampler, make_corpus  # noqa: E402
from ray_cluster import local_cluster  # noqa: E402


def same_tree(a: Path, b: Path) -> bool:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return files_a == files_b and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files_a)


def run(nodes: int, corpus: Path, output: Path, shard_size: int) -> dict:
    with local_cluster(nodes=nodes, cpus_per_node=1) as (address, env):
        cmd = [sys.executable, "jobs/encode_imagenet.py", "--input", str(corpus), "--output", str(output)]
        cmd += ["--shard-size", str(shard_size), "--address", address, "--no-progress", "--mode", "overwrite"]
        with CpuSampler() as cpu:
            t0 = time.time()
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            t1 = time.time()
    if proc.returncode:
        raise RuntimeError(proc.stdout[-3000:] + proc.stderr[-3000:])
    busy, _ = cpu.window(t0, t1)
    written = int(next(line for line in proc.stdout.splitlines() if line.startswith("inputs")).split()[3])
    nodes_line = next((line for line in proc.stdout.splitlines() if line.startswith("nodes")), "nodes 1")
    return {
        "nodes": nodes,
        "wall": t1 - t0,
        "img_s": written / (t1 - t0),
        "cpu": busy / written,
        "spread": nodes_line,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--shard-size", type=int, default=100)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = make_corpus(Path(tmp) / "corpus", args.count)
        rows = [run(n, corpus, Path(tmp) / f"out{n}", args.shard_size) for n in (1, 2)]
        identical = same_tree(Path(tmp) / "out1", Path(tmp) / "out2")
    print(f"\n{args.count} JPEGs (500x375 crops of the bundled photos), shards of {args.shard_size}")
    print(f"{'nodes':>6}{'wall s':>9}{'img/s':>9}{'CPU-ms/img':>12}  spread")
    for r in rows:
        print(f"{r['nodes']:>6}{r['wall']:>9.1f}{r['img_s']:>9.1f}{r['cpu'] * 1000:>12.1f}  {r['spread']}")
    print(f"outputs byte-identical: {identical}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
