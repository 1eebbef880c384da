#!/usr/bin/env python
"""How the driver grows with the number of inputs: plan and dry-run a synthetic input manifest.

For each size (default 1M and 10M inputs) a parquet manifest of ImageNet-like paths and labels is
written (`s3://bucket/imagenet/train/<wnid>/<wnid>_<i>.JPEG`: nothing is read, the files need not
exist), then a fresh process runs the dry run on it exactly as `jobs/encode_imagenet.py --dry-run`
does (list, check keys, hash the listing, load the codec, plan every --mode, size the workers,
estimate the output) and reports its peak RSS (ru_maxrss) and seconds. Targets for 10M inputs on the
project machine: < 1.5 GB and < 2 minutes.

    .venv/bin/python benchmarks/driver_scale.py                    # 1M and 10M
    .venv/bin/python benchmarks/driver_scale.py --sizes 100000,1000000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_RSS_GB, TARGET_SECONDS = 1.5, 120.0


def write_manifest(path: Path, n: int, classes: int = 1000) -> None:
    """n rows: path (URL) and label (class name), written in batches."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    wnids = np.array([f"n{10000000 + 7919 * c:08d}" for c in range(classes)])
    with pq.ParquetWriter(path, pa.schema([("path", pa.string()), ("label", pa.string())])) as w:
        for s in range(0, n, 1_000_000):
            i = np.arange(s, min(n, s + 1_000_000))
            c = wnids[i % classes]
            paths = np.char.add(np.char.add(np.char.add("s3://bucket/imagenet/train/", c), "/"), c)
            paths = np.char.add(np.char.add(np.char.add(paths, "_"), i.astype(str)), ".JPEG")
            w.write_table(pa.table({"path": paths.tolist(), "label": c.tolist()}))


def child(manifest: str, output: str) -> int:
    started = time.perf_counter()
    from pipeline.config import EncodeConfig
    from pipeline.runtime.dry_run import plan_encode
    from pipeline.sinks import SinkSpec

    cfg = EncodeConfig(input=manifest, sink=SinkSpec(output=output, shard_size=1000), progress=False)
    report = plan_encode(cfg, resources={"CPU": 1600.0, "GPU": 0.0})
    seconds = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    shards = report.modes["overwrite"].encode_shards
    print(json.dumps({"inputs": report.inputs, "shards": shards, "seconds": seconds, "rss": rss}))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000000,10000000")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(*args.child)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.sizes.split(",")):
            manifest = Path(tmp) / f"inputs-{n}.parquet"
            t = time.perf_counter()
            write_manifest(manifest, n)
            made = time.perf_counter() - t
            cmd = [sys.executable, __file__, "--child", str(manifest), str(Path(tmp) / f"out-{n}")]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if proc.returncode:
                raise RuntimeError(proc.stderr[-3000:])
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(r | {"manifest_mb": manifest.stat().st_size / 1e6, "made_s": made})
            print(f"  {n:,} inputs: {r}", flush=True)
    print(f"\n{'inputs':>12}{'shards':>9}{'manifest MB':>13}{'dry run s':>11}{'peak RSS GB':>13}")
    for r in rows:
        gb = r["rss"] / 1e9
        print(f"{r['inputs']:>12,}{r['shards']:>9,}{r['manifest_mb']:>13.0f}{r['seconds']:>11.1f}{gb:>13.2f}")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        k = b["inputs"] / a["inputs"]
        print(
            f"{k:.0f}x the inputs: {b['seconds'] / a['seconds']:.1f}x the time, "
            f"{b['rss'] / a['rss']:.1f}x the memory"
        )
    big = rows[-1]
    print(
        f"{big['inputs']:,} inputs: {big['rss'] / 1e9:.2f} GB (target < {TARGET_RSS_GB} GB: "
        f"{'met' if big['rss'] / 1e9 < TARGET_RSS_GB else 'MISSED'}), {big['seconds']:.0f} s (target < "
        f"{TARGET_SECONDS:.0f} s: {'met' if big['seconds'] < TARGET_SECONDS else 'MISSED'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
