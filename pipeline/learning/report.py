"""A job's report: report.json (everything), report.md (tables + notes + plots), curves.png."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .loop import ArmResult  # noqa: E402


@dataclass
class Report:
    task: str
    title: str
    metric: str  # the headline metric's key in ArmResult.final
    arms: dict[str, ArmResult]
    data: dict[str, Any]  # what the data is, how it was obtained, counts
    notes: list[str] = field(default_factory=list)  # honesty: weak labels, synthetic data, caveats
    config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # task-specific reference figures
    figures: list[tuple[str, str]] = field(default_factory=list)  # (file name, caption)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "title": self.title,
            "metric": self.metric,
            "arms": {k: a.to_dict() for k, a in self.arms.items()},
            "data": self.data,
            "notes": self.notes,
            "config": self.config,
            "extra": self.extra,
            "figures": [f for f, _ in self.figures],
            "machine": {
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "cpu": platform.processor() or platform.machine(),
                "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            },
        }


def plot_curves(arms: dict[str, ArmResult], metric: str, path: Path) -> None:
    """Training loss and the headline metric per epoch, one line per arm."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, arm in arms.items():
        epochs = [h["epoch"] for h in arm.history]
        axes[0].plot(epochs, [h["train_loss"] for h in arm.history], marker="o", label=name)
        axes[1].plot(epochs, [h.get(metric, float("nan")) for h in arm.history], marker="o", label=name)
    axes[0].set(xlabel="epoch", ylabel="training loss", title="training loss")
    axes[1].set(xlabel="epoch", ylabel=metric, title=f"held-out {metric}")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def summary_table(report: Report) -> str:
    """The side-by-side table (markdown), also printed by the jobs."""
    keys = list(next(iter(report.arms.values())).final)
    head = ["arm", "input", "params", *keys, "train samples/s", "step tensors MB", "peak memory MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, arm in report.arms.items():
        row = [
            name,
            "x".join(map(str, arm.input_shape)),
            f"{arm.params:,}",
            *[_fmt(arm.final.get(k)) for k in keys],
            f"{arm.samples_per_s:.1f}",
            _fmt(arm.memory.get("step_tensors_mb")),
            _fmt(arm.memory.get("peak_mb")),
        ]
        lines.append("| " + " | ".join(row) + " |")
    kind = next(iter(report.arms.values())).memory.get("kind", "")
    batch = next(iter(report.arms.values())).memory.get("step_tensors_batch")
    return "\n".join(lines) + (
        "\n\nTrain samples/s: the training step (forward, backward, AdamW) on tensors in memory, measured "
        "in alternating rounds after training so both arms see the same machine load."
        f" Step tensors: parameters + gradients + AdamW moments + batch + activations saved for backward, "
        f"counted for one step at batch {batch}. Peak memory: {kind}."
    )


def write_report(report: Report, out: str | Path) -> Path:
    """Write report.json, curves.png and report.md into `out`; returns report.md's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plot_curves(report.arms, report.metric, out / "curves.png")
    figures = [("curves.png", "learning curves, latent vs pixel"), *report.figures]
    (out / "report.json").write_text(json.dumps(report.to_dict(), indent=1, default=str) + "\n")
    md = [f"# {report.title}", "", summary_table(report), ""]
    if report.extra:
        md += ["## Reference points", ""]
        md += [f"- {k}: {_fmt(v)}" for k, v in report.extra.items()]
        md.append("")
    md += ["## Data", ""] + [f"- {k}: {_fmt(v)}" for k, v in report.data.items()] + [""]
    if report.notes:
        md += ["## Read this before the numbers", ""] + [f"- {n}" for n in report.notes] + [""]
    md += ["## Configuration", "", "```json", json.dumps(report.config, indent=1, default=str), "```", ""]
    for name, caption in figures:
        md += [f"![{caption}]({name})", "", f"*{caption}*", ""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path


def job_config(name: str, cfg: Any, device: Any) -> dict[str, Any]:
    """A job's settings for report.json: its own config, then the shared network and training configs."""
    return {
        name: {k: v for k, v in asdict(cfg).items() if k not in ("net", "train")},
        "net": asdict(cfg.net),
        "train": asdict(cfg.train),
        "device": str(device),
    }


def seed_summary(results: dict[str, list[ArmResult]], metrics: list[str]) -> str:
    """Markdown table: per arm, each metric's mean +- sample standard deviation over seeds, and the
    per-seed values (the spread is what a difference between arms has to beat)."""
    import statistics

    head = ["arm", "seeds", *[f"{m} mean +- sd" for m in metrics], *[f"{m} per seed" for m in metrics]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, runs in results.items():
        cells = [name, str(len(runs))]
        values = [[r.final[m] for r in runs] for m in metrics]
        for v in values:
            sd = statistics.stdev(v) if len(v) > 1 else float("nan")
            cells.append(f"{statistics.fmean(v):.4f} +- {sd:.4f}")
        cells += [", ".join(f"{x:.4f}" for x in v) for v in values]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_seeds(values: dict[str, list[float]], ylabel: str, title: str, path: Path) -> None:
    """One bar per arm at its mean over seeds, every seed's value as a dot (the spread at a glance)."""
    import statistics

    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for i, v in enumerate(values.values()):
        ax.bar(i, statistics.fmean(v), color=f"C{i}", alpha=0.5)
        ax.plot([i] * len(v), v, "o", color=f"C{i}")
    ax.set_xticks(range(len(values)), list(values))
    ax.set(ylabel=ylabel, title=title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
