"""scripts/seed_summary.py: mean and sample spread over the seed runs' reports, per arm."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("seed_summary", REPO / "scripts" / "seed_summary.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(path: Path, seed: int, latent: float, waveform: float) -> Path:
    arms = {
        name: {"final": {"si_sdr": v}, "samples_per_s": 10.0 + seed, "input_shape": [108, 256]}
        for name, v in (("latent", latent), ("waveform", waveform))
    }
    path.write_text(json.dumps({"metric": "si_sdr", "config": {"seed": seed}, "arms": arms}))
    return path


def test_mean_and_spread_per_arm(tmp_path, capsys):
    paths = [_report(tmp_path / f"r{s}.json", s, lat, wav) for s, lat, wav in [(0, 1.0, 4.0), (1, 3.0, 4.0)]]
    assert _script().main([*map(str, paths), "--plot", str(tmp_path / "p.png")]) == 0
    out = capsys.readouterr().out
    assert "seeds: [0, 1]" in out
    assert "| latent | 2.0000 | 1.4142 | 1.0000 | 3.0000 | 1.0000, 3.0000 | 11.0 |" in out  # sample sd
    assert "| waveform | 4.0000 | 0.0000 |" in out
    assert (tmp_path / "p.png").stat().st_size > 0


def test_tagged_reports_are_summarised_apart(tmp_path, capsys):
    old = [_report(tmp_path / f"o{s}.json", s, lat, 4.0) for s, lat in [(0, 1.0), (1, 3.0)]]
    new = [_report(tmp_path / f"n{s}.json", s, lat, 4.0) for s, lat in [(0, 5.0), (1, 7.0)]]
    argv = [*(f"old={p}" for p in old), *(f"new={p}" for p in new)]
    assert _script().main(argv) == 0
    out = capsys.readouterr().out
    assert "| latent (old) | 2.0000 | 1.4142 |" in out
    assert "| latent (new) | 6.0000 | 1.4142 |" in out
    assert "| waveform (new) | 4.0000 | 0.0000 |" in out
