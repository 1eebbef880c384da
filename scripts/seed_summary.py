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
    p.add_argument(
        "reports",
        nargs="+",
        help="report.json of each seed's run; TAG=path names that report's arms '<arm> (TAG)', so runs of"
        " the same arm with other settings (e.g. --latent-norm) are summarised apart",
    )
    p.add_argument("--metrics", nargs="+", help="keys of each arm's final figures (default: the headline)")
    p.add_argument("--plot", type=Path, help="write a bar + dots plot of the first metric here")
    args = p.parse_args(argv)
    tagged = [tag_and_path(r) for r in args.reports]
    missing = [str(path) for _, path in tagged if not path.is_file()]
    if missing:
        p.error(f"no such report: {', '.join(missing)}")

    from pipeline.learning.loop import ArmResult
    from pipeline.learning.report import plot_seeds, seed_summary, seed_table

    reports = [(tag, json.loads(path.read_text())) for tag, path in tagged]
    metrics = args.metrics or [reports[0][1]["metric"]]
    seeds = [r["config"].get("seed", r["config"].get("train", {}).get("seed")) for _, r in reports]
    results: dict[str, list[ArmResult]] = {}
    for tag, r in reports:
        for name, arm in r["arms"].items():
            label = f"{name} ({tag})" if tag else name
            results.setdefault(label, []).append(
                ArmResult(
                    name=label,
                    input_shape=arm.get("input_shape", []),
                    params=arm.get("params", 0),
                    final=arm["final"],
                    samples_per_s=arm["samples_per_s"],
                )
            )
    print(f"seeds: {seeds}")
    for m in metrics:
        print(f"\n{m}:\n" + seed_table(seed_summary(results, m)))
    if args.plot:
        plot_seeds(results, metrics[0], args.plot)
        print(f"plot: {args.plot}")
    return 0


def tag_and_path(arg: str) -> tuple[str, Path]:
    """'TAG=path' -> (TAG, path); a plain path -> ('', path)."""
    tag, sep, path = arg.partition("=")
    return (tag, Path(path)) if sep and not Path(arg).is_file() else ("", Path(arg))


if __name__ == "__main__":
    sys.exit(main())
