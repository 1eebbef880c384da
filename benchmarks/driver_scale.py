#!/usr/bin/env python
"""How the driver grows with the number of inputs: plan and dry-run a synthetic input manifest.

For each size (default 1M and 10M inputs) a parquet manifest of ImageNet-like paths and labels is
written (`s3://bucket/imagenet/train/<wnid>/<wnid>_<i>.JPEG`: nothing is read, the files need not
exist), then a fresh process runs the dry run on it exactly as `jobs/encode_imagenet.py --dry-run`
does (list, check keys, hash the listing, load the codec, plan every --mode, size the workers,
estimate the output) and reports its peak RSS (ru_maxrss) and seconds. Targets for 10M inputs on the
project machine: < 1.5 GB and < 2 minutes.

`--folder-sizes` does the same for ImageNet-layout image folders of empty files (`<wnid>/<wnid>_<i>.JPEG`
in 1,000 class folders, made on local disk): listed one task per class folder, as a run lists them.

    .venv/bin/python benchmarks/driver_scale.py                    # 1M and 10M
    .venv/bin/python benchmarks/driver_scale.py --sizes 100000,1000000 --folder-sizes 100000,400000
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
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


def write_folder(root: Path, n: int, classes: int = 1000) -> None:
    """n empty .JPEG files in `classes` class folders (listing reads names and sizes, never bytes)."""
    import os

    wnids = [f"n{10000000 + 7919 * c:08d}" for c in range(classes)]
    for w in wnids:
        (root / w).mkdir(parents=True)
    for i in range(n):
        w = wnids[i % classes]
        os.close(os.open(root / w / f"{w}_{i}.JPEG", os.O_CREAT | os.O_WRONLY, 0o644))


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
    p.add_argument("--sizes", default="1000000,10000000", help="input-manifest sizes ('' for none)")
    p.add_argument("--folder-sizes", default="", help="image-folder sizes, e.g. 100000,400000")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(*args.child)
    runs: list[tuple[str, int]] = [("manifest", int(x)) for x in args.sizes.split(",") if x]
    runs += [("image folder", int(x)) for x in args.folder_sizes.split(",") if x]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, n in runs:
            inputs = Path(tmp) / (f"inputs-{n}.parquet" if kind == "manifest" else f"folder-{n}")
            t = time.perf_counter()
            (write_manifest if kind == "manifest" else write_folder)(inputs, n)
            made = time.perf_counter() - t
            cmd = [sys.executable, __file__, "--child", str(inputs), str(Path(tmp) / f"out-{kind[0]}{n}")]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if proc.returncode:
                raise RuntimeError(proc.stderr[-3000:])
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(r | {"kind": kind, "made_s": made})
            print(f"  {kind}, {n:,} inputs: {r}", flush=True)
            if kind == "image folder":
                shutil.rmtree(inputs)
    print(f"\n{'input':>14}{'inputs':>12}{'shards':>9}{'dry run s':>11}{'peak RSS GB':>13}")
    for r in rows:
        gb = r["rss"] / 1e9
        print(f"{r['kind']:>14}{r['inputs']:>12,}{r['shards']:>9,}{r['seconds']:>11.1f}{gb:>13.2f}")
    for kind in ("manifest", "image folder"):
        same = [r for r in rows if r["kind"] == kind]
        if len(same) > 1:
            a, b = same[0], same[-1]
            print(
                f"{kind}: {b['inputs'] / a['inputs']:.0f}x the inputs: {b['seconds'] / a['seconds']:.1f}x "
                f"the time, {b['rss'] / a['rss']:.1f}x the memory"
            )
    manifests = [r for r in rows if r["kind"] == "manifest"]
    if manifests:
        big = manifests[-1]
        print(
            f"{big['inputs']:,} inputs: {big['rss'] / 1e9:.2f} GB (target < {TARGET_RSS_GB} GB: "
            f"{'met' if big['rss'] / 1e9 < TARGET_RSS_GB else 'MISSED'}), {big['seconds']:.0f} s (target < "
            f"{TARGET_SECONDS:.0f} s: {'met' if big['seconds'] < TARGET_SECONDS else 'MISSED'})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
