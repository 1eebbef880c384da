"""Mean and spread over seeds of learning-job reports written by separate runs (one seed per call,
as jobs/learn_separate.py runs), with a plot: the figures docs/learning*.md quote.

Usage: python scripts/seed_summary.py out/sep-s0/report.json out/sep-s1/report.json ... \\
           [--metrics si_sdr si_sdr_vocals] [--plot docs/x.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", type=Path, help="report.json of each seed's run")
    p.add_argument("--metrics", nargs="+", help="keys of each arm's final figures (default: the headline)")
    p.add_argument("--plot", type=Path, help="write a bar + dots plot of the first metric here")
    args = p.parse_args(argv)
    missing = [str(r) for r in args.reports if not r.is_file()]
    if missing:
        p.error(f"no such report: {', '.join(missing)}")

    from pipeline.learning.loop import ArmResult
    from pipeline.learning.report import plot_seeds, seed_summary, seed_table

    reports = [json.loads(r.read_text()) for r in args.reports]
    metrics = args.metrics or [reports[0]["metric"]]
    seeds = [r["config"].get("seed", r["config"].get("train", {}).get("seed")) for r in reports]
    results = {
        name: [
            ArmResult(
                name=name,
                input_shape=r["arms"][name].get("input_shape", []),
                params=r["arms"][name].get("params", 0),
                final=r["arms"][name]["final"],
                samples_per_s=r["arms"][name]["samples_per_s"],
            )
            for r in reports
        ]
        for name in reports[0]["arms"]
    }
    print(f"seeds: {seeds}")
    for m in metrics:
        print(f"\n{m}:\n" + seed_table(seed_summary(results, m)))
    if args.plot:
        plot_seeds(results, metrics[0], args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
