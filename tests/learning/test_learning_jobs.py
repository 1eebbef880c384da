"""The learning jobs and the loader benchmark end to end on tiny data: the real encode pipeline
(local Ray), real shards read back by the loaders, both arms trained, report files written.
Figures are not asserted beyond sanity (finite, in range); they go to the reports."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from pipeline.config import DEFAULT_IMAGE_INPUT

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
TINY = ["--epochs", "1", "--width", "8", "--batch-size", "4", "--no-progress"]


def _load(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _check_report(out: Path, metric: str, lo: float, hi: float) -> dict:
    for name in ("report.md", "report.json", "curves.png", "samples.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    report = json.loads((out / "report.json").read_text())
    assert set(report["arms"]) == {"latent", "pixel"}
    assert report["arms"]["latent"]["input_shape"] == [12, 32, 32]
    assert report["arms"]["pixel"]["input_shape"] == [3, 64, 64]
    for arm in report["arms"].values():
        assert lo <= arm["final"][metric] <= hi
        assert (
            arm["samples_per_s"] > 0 and arm["memory"]["peak_mb"] > 0 and arm["memory"]["step_tensors_mb"] > 0
        )
        assert all(math.isfinite(h["train_loss"]) for h in arm["history"])
    md = (out / "report.md").read_text()
    assert "| latent | 12x32x32 |" in md and "| pixel | 3x64x64 |" in md
    return report


def _check_classify(out: Path, shapes: dict[str, list[int]], seeds: int) -> dict:
    for name in ("report.md", "report.json", "curves.png", "samples.png", "accuracy.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    report = json.loads((out / "report.json").read_text())
    assert set(report["arms"]) == {f"{a} s{k}" for a in shapes for k in range(seeds)}
    for name, arm in report["arms"].items():
        assert arm["input_shape"] == shapes[name.split()[0]]
        assert 0.0 <= arm["final"]["accuracy"] <= 1.0
        assert arm["samples_per_s"] > 0 and arm["memory"]["step_tensors_mb"] > 0
        assert all(math.isfinite(h["train_loss"]) for h in arm["history"])
    seeds_table = report["extra"]["seeds"]
    for a in shapes:
        accs = [report["arms"][f"{a} s{k}"]["final"]["accuracy"] for k in range(seeds)]
        assert seeds_table[a]["seeds"] == [round(x, 4) for x in accs]
    md = (out / "report.md").read_text()
    assert f"## Accuracy over {seeds} seeds" in md
    assert ("gap full - pixel" in md) == ("full" in shapes)
    return report


def test_learn_classify_end_to_end(tmp_path):
    """Three arms, two seeds, flip pairs and rolls, on the 24 RGB sample photos."""
    job = _load("jobs/learn_classify.py")
    argv = ["--images", DEFAULT_IMAGE_INPUT, "--output", str(tmp_path), "--seeds", "2", *TINY]
    assert job.main(argv) == 0
    shapes = {"latent": [12, 32, 32], "pixel": [3, 64, 64], "full": [3, 256, 256]}
    report = _check_classify(tmp_path, shapes, seeds=2)
    assert report["data"]["classes"] == 4 and report["data"]["val samples"] == 5  # every 5th of 24 keys
    manifest = json.loads((tmp_path / "latents" / "manifest.json").read_text())
    assert manifest["run"]["flip_pair"] is True  # the latent arm's exact flips
    # a second run trains from the first run's shards (--latents), no encoding; arms as asked
    again = tmp_path / "again"
    argv = ["--latents", str(tmp_path / "latents"), "--images", DEFAULT_IMAGE_INPUT, "--output", str(again)]
    assert job.main([*argv, "--arms", "pixel", "latent", "--seeds", "1", *TINY]) == 0
    report = _check_classify(again, {"pixel": [3, 64, 64], "latent": [12, 32, 32]}, seeds=1)
    assert report["data"]["train samples"] == 19
    assert "share of the gap the latents recover" not in report["extra"]  # no full arm, no gap


def test_learn_classify_picks_the_grey_codec_for_grey_images(tmp_path):
    """Grey photos stored as RGB (R = G = B), as many real sets are: the job picks grey-16x-klt and
    every arm sees one channel (4x32x32 latents vs 1x64x64 pixels: the same 4,096 values)."""
    from PIL import Image

    from pipeline.learning.data import image_channels, image_files

    grey = tmp_path / "grey"
    for path in image_files(DEFAULT_IMAGE_INPUT):
        rel = path.relative_to(DEFAULT_IMAGE_INPUT)
        (grey / rel).parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as im:
            im.convert("L").convert("RGB").save((grey / rel).with_suffix(".png"))
    for name in ("LOC_synset_mapping.txt",):
        (grey / name).write_bytes((Path(DEFAULT_IMAGE_INPUT) / name).read_bytes())
    assert image_channels(image_files(grey)) == 1 and image_channels(image_files(DEFAULT_IMAGE_INPUT)) == 3
    job = _load("jobs/learn_classify.py")
    out = tmp_path / "run"
    assert job.main(["--images", str(grey), "--output", str(out), "--seeds", "1", "--no-flip", *TINY]) == 0
    report = _check_classify(out, {"latent": [4, 32, 32], "pixel": [1, 64, 64], "full": [1, 256, 256]}, 1)
    assert report["data"]["codec"] == "grey-16x-klt"


def _colour_folder(dest: Path, train: int, val: int) -> Path:
    """train/ and val/ of the bundled samples that hold colour (several bundled photos are grey)."""
    import numpy as np
    from PIL import Image

    from pipeline.learning.data import image_files

    colour = []
    for path in image_files(DEFAULT_IMAGE_INPUT):
        a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
        if np.abs(a - a.mean(axis=2, keepdims=True)).mean() > 3:
            colour.append(path)
    assert len(colour) >= train + val
    for i, path in enumerate(colour[: train + val]):
        split = dest / ("train" if i < train else "val")
        split.mkdir(parents=True, exist_ok=True)
        (split / f"{i:02d}{path.suffix}").write_bytes(path.read_bytes())
    return dest


def test_learn_colorize_end_to_end(tmp_path):
    job = _load("jobs/learn_colorize.py")
    images = _colour_folder(tmp_path / "images", 6, 3)  # the folder's own split, every image of it
    out = tmp_path / "run"
    assert job.main(["--images", str(images), "--seeds", "2", "--output", str(out), *TINY]) == 0
    for name in ("report.md", "report.json", "curves.png", "samples.png", "chroma_psnr.png"):
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "report.json").read_text())
    assert report["metric"] == "chroma_psnr"
    assert report["data"]["train pairs"] == 6 and report["data"]["val pairs"] == 3
    shapes = {"latent": [12, 32, 32], "pixel": [3, 64, 64], "full": [3, 256, 256]}
    assert {n: a["input_shape"] for n, a in report["arms"].items()} == {
        f"{arm} s{seed}": shape for arm, shape in shapes.items() for seed in (0, 1)
    }
    extra = report["extra"]
    assert set(extra["seeds"]) == set(shapes) and all(len(s["seeds"]) == 2 for s in extra["seeds"].values())
    for arm in shapes:
        floor = extra[f"{arm} floor (grey input), chroma_psnr"]
        # the colour target through each representation carries colour the grey input lacks
        assert extra[f"{arm} ceiling (colour target), chroma_psnr"] > floor + 3
        # one tiny epoch from a zero-initialised residual stays near the grey floor, not below it by much
        assert abs(extra["seeds"][arm]["mean"] - floor) < 3
    # a 64x64 round trip loses colour detail that 256x256 keeps exactly
    ceiling = "ceiling (colour target), chroma_psnr"
    assert extra[f"full {ceiling}"] > extra[f"pixel {ceiling}"]


def test_learn_ocr_end_to_end(tmp_path):
    job = _load("jobs/learn_ocr.py")
    assert job.main(["--samples", "6", "--val-samples", "2", "--output", str(tmp_path), *TINY]) == 0
    report = _check_report(tmp_path, "char_accuracy", 0.0, 1.0)
    assert report["data"]["train pages"] == 6 and report["data"]["val pages"] == 2
    assert "synthetic" in (tmp_path / "report.md").read_text().lower()


def test_loader_benchmark_prints_its_table(tmp_path, capsys):
    bench = _load("benchmarks/loader_throughput.py")
    args = [
        "--images",
        DEFAULT_IMAGE_INPUT,
        "--limit",
        "12",
        "--shard-size",
        "4",
        "--workers",
        "0",
        "1",
        "--repeats",
        "1",
        "--batch-size",
        "4",
        "--epochs-per-pass",
        "2",
        "--out",
        str(tmp_path),
    ]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    assert "samples/s" in out and "per core" in out and "per CPU-s" in out
    table = out.split("\n\n")[-1].splitlines()
    loaders = ("latent WebDataset", "latent WebDataset, int8", "JPEG WebDataset", "JPEG WebDataset, draft")
    for loader in (*loaders, "Zarr random access"):
        rows = [line for line in table if line.startswith(loader + "  ")]
        assert len(rows) == 2, loader  # 0 and 1 workers
        assert all(line.split()[-4] == "24" for line in rows)  # every sample, once per epoch of a pass
    assert (
        "latent / JPEG WebDataset, 1 workers" in out and "latent / JPEG WebDataset, draft, 0 workers" in out
    )
