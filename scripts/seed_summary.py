"""Mean and spread over seeds of learning-job reports written by separate runs (one seed per call,
as jobs/learn_separate.py runs), with a plot: the figures docs/learning*.md quote.

Usage: python scripts/seed_summary.py out/sep-s0/report.json out/sep-s1/report.json ... \\
           [--metrics si_sdr si_sdr_vocals] [--plot docs/x.png] [--title "..."]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", type=Path, help="report.json of each seed's run")
    p.add_argument("--metrics", nargs="+", help="keys of each arm's final figures (default: the headline)")
    p.add_argument("--plot", type=Path, help="write a bar + dots plot of the first metric here")
    p.add_argument("--title", default="", help="the plot's title")
    args = p.parse_args(argv)
    missing = [str(r) for r in args.reports if not r.is_file()]
    if missing:
        p.error(f"no such report: {', '.join(missing)}")

    from pipeline.learning.report import plot_seeds

    reports = [json.loads(r.read_text()) for r in args.reports]
    metrics = args.metrics or [reports[0]["metric"]]
    seeds = [r["config"].get("seed", r["config"].get("train", {}).get("seed")) for r in reports]
    arms = list(reports[0]["arms"])
    values = {m: {a: [r["arms"][a]["final"][m] for r in reports] for a in arms} for m in metrics}
    print(f"seeds: {seeds}")
    print("| arm | " + " | ".join(f"{m} mean +- sd | per seed" for m in metrics) + " | train samples/s |")
    print("|---|" + "---|---|" * len(metrics) + "---|")
    for a in arms:
        cells = []
        for m in metrics:
            v = values[m][a]
            sd = statistics.stdev(v) if len(v) > 1 else float("nan")
            cells += [f"{statistics.fmean(v):.3f} +- {sd:.3f}", ", ".join(f"{x:.3f}" for x in v)]
        speed = statistics.median(r["arms"][a]["samples_per_s"] for r in reports)
        print(f"| {a} | " + " | ".join(cells) + f" | {speed:.1f} |")
    if args.plot:
        plot_seeds(values[metrics[0]], metrics[0], args.title, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
