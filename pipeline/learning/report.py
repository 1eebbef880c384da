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
    tables: list[tuple[str, str]] = field(default_factory=list)  # (title, markdown) after the arms' table

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
    for title, table in report.tables:
        md += [f"## {title}", "", table, ""]
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


def seed_summary(results: dict[str, list[ArmResult]], metric: str) -> dict[str, dict[str, float]]:
    """Per arm over its seeds: mean, standard deviation (n - 1; 0 for one seed), min, max and the
    seeds' values of the final `metric`, and the median train samples/s."""
    out = {}
    for name, runs in results.items():
        v = torch.tensor([r.final[metric] for r in runs], dtype=torch.float64)
        speeds = sorted(r.samples_per_s for r in runs)
        out[name] = {
            "mean": round(v.mean().item(), 4),
            "std": round(v.std().item(), 4) if len(v) > 1 else 0.0,
            "min": round(v.min().item(), 4),
            "max": round(v.max().item(), 4),
            "seeds": [round(x, 4) for x in v.tolist()],
            "samples_per_s": round(speeds[len(speeds) // 2], 1),
        }
    return out


def seed_table(summary: dict[str, dict[str, float]]) -> str:
    """Markdown: one row per arm, mean +- std, range and each seed's value."""
    lines = [
        "| arm | mean | std | min | max | per seed | train samples/s (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        seeds = ", ".join(f"{x:.4f}" for x in s["seeds"])
        lines.append(
            f"| {name} | {s['mean']:.4f} | {s['std']:.4f} | {s['min']:.4f} | {s['max']:.4f} | {seeds} "
            f"| {s['samples_per_s']:.1f} |"
        )
    return "\n".join(lines)


def plot_seeds(results: dict[str, list[ArmResult]], metric: str, path: Path) -> None:
    """The final metric per arm: each seed a dot, the mean a bar with +- one standard deviation."""
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(results), 3.4))
    for i, runs in enumerate(results.values()):
        v = torch.tensor([r.final[metric] for r in runs], dtype=torch.float64)
        std = v.std().item() if len(v) > 1 else 0.0
        ax.bar(i, v.mean().item(), yerr=std, color=f"C{i}", alpha=0.35, capsize=6, width=0.6)
        ax.plot([i] * len(v), v.tolist(), "o", color=f"C{i}")
    # "latent (channel)": the tag of seed_summary's TAG=report on its own line
    labels = [
        n.replace(" (", "\n(") + "\n" + "x".join(map(str, r[0].input_shape)) for n, r in results.items()
    ]
    ax.set_xticks(range(len(results)), labels)
    values = [r.final[metric] for runs in results.values() for r in runs]
    pad = max(0.02, (max(values) - min(values)) * 0.5)
    low = min(values) - pad if min(values) < 0 else max(0.0, min(values) - pad)  # SI-SDR can be < 0
    ax.set_ylim(low, min(1.0, max(values) + pad) if max(values) <= 1 else None)
    ax.set(ylabel=f"held-out {metric}", title=f"{metric} per arm ({len(next(iter(results.values())))} seeds)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
