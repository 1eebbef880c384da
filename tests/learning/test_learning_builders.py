"""Data builders, models and measurement helpers of the learning jobs (no Ray, fast)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import DEFAULT_IMAGE_INPUT
from pipeline.learning.classify import photo_overlap
from pipeline.learning.colorize import build_pairs, upsample
from pipeline.learning.data import LatentSet, Standardizer, image_files, load_pixels, split_of
from pipeline.learning.measure import PeakMemory, step_tensor_bytes
from pipeline.learning.models import Classifier, GridReader, Translator, count_parameters
from pipeline.learning.ocr import render_pages
from pipeline.learning.render import (
    CHARSET,
    GRID,
    installed_fonts,
    labels_to_lines,
    render_page,
    text_to_labels,
)


def test_render_page_is_seeded_and_labels_round_trip():
    fonts = installed_fonts()
    a, b = render_page(np.random.default_rng(3), fonts), render_page(np.random.default_rng(3), fonts)
    assert a.text == b.text and np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert a.image.size == (256, 256) and a.image.mode == "RGB"
    assert len(a.text) == GRID * GRID and set(a.text) <= set(CHARSET)
    lines = labels_to_lines(text_to_labels(a.text))
    assert "".join(lines) == a.text and len(lines) == GRID
    other = render_page(np.random.default_rng(4), fonts)
    assert other.text != a.text


def test_rendered_glyphs_mark_the_cells_that_hold_characters():
    page = render_page(np.random.default_rng(0), installed_fonts(), blank_p=0.5)
    ink = 255 - np.asarray(page.image.convert("L"), dtype=np.float32)
    cells = ink.reshape(GRID, 32, GRID, 32).transpose(0, 2, 1, 3).reshape(GRID * GRID, -1)
    dark = (cells > ink.mean() + 60).sum(axis=1)  # glyph pixels stand far above the paper
    filled = np.array([c != " " for c in page.text])
    assert dark[filled].min() > dark[~filled].max()


def test_render_pages_writes_pngs_and_labels(tmp_path):
    labels = render_pages(tmp_path, pages=3, val_pages=2, seed=0)
    assert sorted(labels) == [
        f"{s}/page/{n:05d}.png" for s, n in [("train", 0), ("train", 1), ("train", 2), ("val", 3), ("val", 4)]
    ]
    assert (tmp_path / "labels.json").is_file()
    assert Image.open(tmp_path / "val/page/00004.png").size == (256, 256)


def test_build_pairs_writes_grey_copies_of_colour_crops(tmp_path):
    n = build_pairs(DEFAULT_IMAGE_INPUT, tmp_path, samples=3, val_samples=2, seed=0)
    assert n == 5
    colour = sorted((tmp_path / "train" / "colour").glob("*.png"))
    grey = sorted((tmp_path / "train" / "grey").glob("*.png"))
    assert [p.name for p in colour] == [p.name for p in grey] and len(colour) == 3
    c, g = Image.open(colour[0]), Image.open(grey[0])
    assert c.size == g.size == (256, 256) and c.mode == "RGB" and g.mode == "L"
    assert np.abs(np.asarray(c.convert("L"), dtype=int) - np.asarray(g, dtype=int)).max() <= 1
    px = load_pixels([grey[0]], 64)  # the pipeline's rule replicates grey to RGB
    assert px.shape == (1, 3, 64, 64) and torch.equal(px[0, 0], px[0, 1]) and torch.equal(px[0, 1], px[0, 2])
    with pytest.raises(ValueError):
        build_pairs(DEFAULT_IMAGE_INPUT, tmp_path / "x", samples=1000, val_samples=1, seed=0)


def test_upsample_maps_pixel_range_to_unit_range():
    x = torch.full((1, 3, 64, 64), 0.25)
    y = upsample(x)
    assert y.shape == (1, 3, 256, 256) and torch.allclose(y, torch.full_like(y, 0.75), atol=1e-5)


def test_standardizer_round_trips_and_normalizes_per_channel():
    z = torch.randn(20, 4, 8, 8) * torch.tensor([1.0, 10, 100, 0.1]).view(1, 4, 1, 1) + 5
    norm = Standardizer.fit(z)
    zn = norm(z)
    assert torch.allclose(zn.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-4)
    assert torch.allclose(zn.std(dim=(0, 2, 3)), torch.ones(4), atol=1e-3)
    assert torch.allclose(norm.inverse(zn), z, atol=1e-3)


def test_split_and_select_and_listing():
    assert split_of({"path": "val/n1/x.JPEG"}) == "val"
    assert split_of({"path": "n1/x.JPEG"}) == "train"
    ls = LatentSet(
        "r", torch.arange(6.0).view(3, 2, 1, 1), ["a", "b", "c"], torch.tensor([0, 1, 2]), [{}, {}, {}]
    )
    sub = ls.select([2, 0])
    assert sub.keys == ["c", "a"] and sub.labels.tolist() == [2, 0] and sub.z[0, 0].item() == 4.0
    files = image_files(DEFAULT_IMAGE_INPUT)
    assert len(files) == 24 and files == sorted(files)


def test_photo_overlap_counts_val_crops_from_train_photos(tmp_path):
    (tmp_path / "CROPS.tsv").write_text(
        "file\tsource\tcrop\ntrain/a/1.JPEG\tp1.jpg\t-\ntrain/b/2.JPEG\tp2.jpg\t-\n"
        "val/a/3.JPEG\tp1.jpg\t-\nval/b/4.JPEG\tp3.jpg\t-\n"
    )
    got = photo_overlap(tmp_path, ["train/a/1.JPEG", "train/b/2.JPEG"], ["val/a/3.JPEG", "val/b/4.JPEG"])
    assert got == {"val_crops": 2, "val_crops_from_train_photos": 1, "photos": 3}
    assert photo_overlap(Path(tmp_path / "none"), [], []) is None


@pytest.mark.parametrize("domain,channels,side", [("latent", 12, 32), ("pixel", 3, 64)])
def test_models_share_the_trunk_and_differ_in_the_stem(domain, channels, side):
    x = torch.randn(2, channels, side, side)
    clf = Classifier(domain, channels, 9)
    assert clf(x).shape == (2, 9)
    assert GridReader(domain, channels, len(CHARSET))(x).shape == (2, len(CHARSET), 8, 8)
    tr = Translator(channels, channels, 1 if domain == "latent" else 2).eval()
    assert torch.equal(tr(x), x)  # zero-initialised output layer: starts as the identity (grey in, grey out)
    other = Classifier("pixel" if domain == "latent" else "latent", 15 - channels, 9)
    trunk = {k: v.shape for k, v in clf.state_dict().items() if not k.startswith("stem")}
    assert trunk == {k: v.shape for k, v in other.state_dict().items() if not k.startswith("stem")}
    assert abs(count_parameters(clf) - count_parameters(other)) < 0.02 * count_parameters(clf)


def test_step_tensor_bytes_counts_parameters_and_activations():
    model = Classifier("latent", 12, 9)
    x, y = torch.randn(4, 12, 32, 32), torch.tensor([0, 1, 2, 3])
    small = step_tensor_bytes(model, x, y, torch.nn.functional.cross_entropy)
    params = 4 * 4 * count_parameters(model)
    assert small > params
    big = step_tensor_bytes(
        model, torch.randn(16, 12, 32, 32), torch.arange(16) % 9, torch.nn.functional.cross_entropy
    )
    assert big - params > 3 * (small - params)  # activations scale with the batch
    assert all(p.grad is None for p in model.parameters())


def test_peak_memory_sees_an_allocation_on_cpu():
    with PeakMemory(torch.device("cpu")) as mem:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        del block
    reading = mem.reading.to_dict()
    assert reading["kind"].startswith("CPU")
    assert reading["growth_mb"] >= 50 or "not reset" in reading["kind"]
