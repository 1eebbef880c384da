from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.training import codec_data as D


def _images(root: Path, names: list[str]) -> None:
    rng = np.random.default_rng(0)
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(root / n)


def test_split_is_by_file_deterministic_and_keeps_pairs_together(tmp_path):
    names = [f"a/img{i:02d}.png" for i in range(20)] + ["b/moto_left.png", "b/moto_right.png"]
    _images(tmp_path, names)
    items = D.find_items([tmp_path], D.IMAGE_EXTS)
    train, valid = D.split_by_file(items, 0.25)
    assert {it.name for it in train}.isdisjoint({it.name for it in valid})
    assert len(train) + len(valid) == len(items) and 5 <= len(valid) <= 6
    assert D.split_by_file(list(reversed(items)), 0.25) == (train, valid)  # order-independent
    sides = {it.name for it in valid} & {"b/moto_left.png", "b/moto_right.png"}
    assert len(sides) in (0, 2)  # the stereo pair is never split
    meta = D.describe_split(train, valid)
    assert meta["valid"]["count"] == len(valid) and len(meta["valid"]["sha256"]) == 64
    assert {e["name"] for e in meta["train"]["files"]} == {it.name for it in train}


def test_image_crops_depend_only_on_index(tmp_path):
    _images(tmp_path, ["x.png", "y.png", "small.png"])
    Image.fromarray(np.zeros((10, 12, 3), dtype=np.uint8)).save(tmp_path / "small.png")  # < crop
    items = D.find_items([tmp_path], D.IMAGE_EXTS)
    a, b = D.ImageCrops(items, 16, seed=3), D.ImageCrops(items, 16, seed=3)
    for i in (0, 7, 12345):
        assert torch.equal(a[i], b[i])
        assert a[i].shape == (3, 16, 16) and a[i].min() >= -0.5 and a[i].max() <= 0.5
    assert not torch.equal(a[0], a[1])


def test_audio_windows_normalised_and_stems_remixed(tmp_path):
    sf = pytest.importorskip("soundfile")
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "song.wav", 0.3 * rng.standard_normal((5000, 2)) + 0.1, 44100)
    for stem in ("vocals", "bass", "drums", "other"):
        (tmp_path / "track").mkdir(exist_ok=True)
        sf.write(tmp_path / "track" / f"{stem}.wav", 0.2 * rng.standard_normal((6000, 1)), 44100)
    items = D.find_items([tmp_path], D.AUDIO_EXTS, stems=True)
    assert sorted(len(it.paths) for it in items) == [1, 4]
    assert {it.name for it in items} == {"song.wav", "track"}
    ds = D.AudioWindows(items, 1024, seed=1)
    for i in range(8):
        x = ds[i]
        assert x.shape == (2, 1024)
        assert abs(x.mean().item()) < 1e-6 and x.abs().max().item() == pytest.approx(0.5, abs=1e-6)
        assert torch.equal(x, ds[i])
    assert len(D.mixing_weights(4)) == 1 + 6 + 4 + 6 + 4  # the reference's 21 remixes of 4 stems


def test_step_batches_are_disjoint_across_ranks_and_resumable():
    full = list(D.StepBatches(4, 0, 6, rank=1, world=2))
    assert list(D.StepBatches(4, 3, 6, rank=1, world=2)) == full[3:]
    other = list(D.StepBatches(4, 0, 6, rank=0, world=2))
    assert not {i for b in full for i in b} & {i for b in other for i in b}
