"""The document task's ground truth: glyph positions from a PDF's text layer, in the rendered page's
pixels (checked against the rendered ink), and the per-cell labels built from them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

pytest.importorskip("pypdfium2")

from tiny_pdf import write_pdf  # noqa: E402

from pipeline.learning.documents import (  # noqa: E402
    CELL,
    CLASSES,
    DocumentsConfig,
    cell_labels,
    cell_metrics,
    char_class,
    glyph_loss,
    make_model,
    pdf_splits,
    render_tiles,
)
from pipeline.learning.loop import LearnConfig  # noqa: E402
from pipeline.learning.models import NetConfig  # noqa: E402
from pipeline.learning.pdf_text import page_count, render_page  # noqa: E402


def test_text_layer_glyphs_sit_on_the_rendered_ink(tmp_path):
    pdf = write_pdf(
        tmp_path / "a.pdf", [[(72, 700, 24, "HI there"), (300, 100, 12, "x9")], [(72, 72, 12, "Z")]]
    )
    assert page_count(pdf) == 2
    page = render_page(pdf, 0, scale=2.0)
    assert page.image.mode == "L" and page.image.size == (1224, 1584)
    assert "".join(g.char for g in page.glyphs) == "HIthere" + "x9"  # spaces are not glyphs
    ink = np.asarray(page.image)
    for g in page.glyphs:
        r = max(2, int(g.height / 3))
        y, x = int(round(g.cy)), int(round(g.cx))
        assert ink[y - r : y + r + 1, x - r : x + r + 1].min() < 100, g  # ink at the box centre
        assert ink[y - 3 * r - 20 : y - 3 * r, x - r : x + r + 1].min() > 200, g  # paper above the line
    # points from the bottom-left -> pixels from the top-left: the 24 pt line is near the top
    h = next(g for g in page.glyphs if g.char == "H")
    assert 2 * 72 < h.cx < 2 * (72 + 24) and abs(h.cy - 2 * (792 - 700 - 0.718 * 24 / 2)) < 3
    nine = next(g for g in page.glyphs if g.char == "9")
    assert nine.cy > 2 * (792 - 120)  # the 12 pt line at y = 100 pt is near the bottom
    assert [g.char for g in render_page(pdf, 1, scale=1.0).glyphs] == ["Z"]


def test_a_crop_box_that_does_not_start_at_the_origin(tmp_path):
    pdf = write_pdf(tmp_path / "a.pdf", [[(72, 700, 24, "HI")]])
    plain = render_page(pdf, 0, scale=1.0).glyphs
    data = pdf.read_bytes().replace(
        b"/MediaBox [0 0 612 792]", b"/MediaBox [0 0 612 792] /CropBox [50 60 400 760]"
    )
    (tmp_path / "b.pdf").write_bytes(data)  # the xref offsets move: PDFium rebuilds the table
    page = render_page(tmp_path / "b.pdf", 0, scale=1.0)
    assert page.image.size == (350, 700)
    for a, b in zip(plain, page.glyphs, strict=True):  # same glyphs, shifted by the box's corner
        assert b.cx == pytest.approx(a.cx - 50) and b.cy == pytest.approx(a.cy - (792 - 760))


def test_char_classes_fold_case_and_pool_the_rest():
    assert char_class("a") == char_class("A") == CLASSES.index("A")
    assert char_class("7") == CLASSES.index("7")
    assert char_class("\\") == char_class("é") == char_class("∑") == len(CLASSES) - 1
    assert CLASSES[0] == " "


def test_a_cell_takes_the_glyph_nearest_its_centre():
    # tile at (100, 50); cell (row 2, col 3) has its centre at (100 + 3*32 + 16, 50 + 2*32 + 16)
    cx, cy = 100 + 3 * CELL + CELL / 2, 50 + 2 * CELL + CELL / 2
    chars = ["q", "w", "5", "k"]
    centres = np.array([[cx + 5, cy - 4], [cx - 2, cy + 1], [cx + CELL, cy], [cx, cy + 9]])
    y = cell_labels(chars, centres, 100, 50, radius=6)
    assert y[2, 3] == char_class("w")  # nearer than "q"; "k" is 9 px off vertically: too far
    assert y[2, 4] == char_class("5")
    assert (y != 0).sum() == 2
    assert (cell_labels([], np.zeros((0, 2)), 0, 0, radius=6) == 0).all()


def test_only_text_cells_are_trained_on_and_scored():
    y = torch.zeros(1, 8, 8, dtype=torch.long)
    y[0, 0, :4] = torch.tensor([1, 2, 3, 4])
    logits = torch.zeros(1, len(CLASSES), 8, 8)
    logits[0, 0] = 5.0  # predicts blank everywhere...
    logits[0, 1, 0, 0] = 9.0  # ...except the first text cell, which it gets right
    assert cell_metrics(logits, y)["glyph_accuracy"] == pytest.approx(1 / 4)
    worse = logits.clone()
    worse[0, :, 1:] = torch.randn(len(CLASSES), 7, 8)  # blank cells: anything goes, nothing changes
    assert glyph_loss(worse, y) == pytest.approx(float(glyph_loss(logits, y)))
    assert glyph_loss(logits, y) > glyph_loss(logits + 20 * F.one_hot(y, len(CLASSES)).permute(0, 3, 1, 2), y)


@pytest.mark.parametrize(
    "arm,shape,kernel", [("latent", (4, 32, 32), 1), ("pixel", (1, 64, 64), 1), ("full", (1, 256, 256), 4)]
)
def test_every_arm_reads_an_8x8_grid_through_a_cell_stem(arm, shape, kernel):
    model = make_model(arm, shape[0], NetConfig(width=8)).eval()
    assert model(torch.zeros(2, *shape)).shape == (2, len(CLASSES), 8, 8)
    # classify's stem family: embed each 32x32 grid cell (1x1 on latents and at 64, 4x4 at 256) ...
    first, second = [m for m in model.stem if isinstance(m, torch.nn.Conv2d)][:2]
    assert first.kernel_size == first.stride == (kernel, kernel)
    assert second.stride == ((1, 1) if arm == "latent" else (2, 2))
    # ... then the same trunk and head for every arm
    other = make_model("latent", 4, NetConfig(width=8))
    rest = {k: v.shape for k, v in model.state_dict().items() if not k.startswith("stem.")}
    assert rest == {k: v.shape for k, v in other.state_dict().items() if not k.startswith("stem.")}


def test_dropout_acts_in_training_only():
    model = make_model("latent", 4, NetConfig(width=8), dropout=0.5)
    x = torch.randn(2, 4, 32, 32)
    model.train()
    assert not torch.equal(model(x), model(x))  # a new mask per call
    model.eval()
    assert torch.equal(model(x), model(x))
    plain = make_model("latent", 4, NetConfig(width=8))
    assert {k: v.shape for k, v in plain.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }  # dropout adds no parameters


def _collections(root, pdfs_per_collection=5):
    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "0123456789"]
    for c, name in enumerate(["alpha", "beta"]):
        (root / name).mkdir(parents=True)
        for i in range(pdfs_per_collection):
            rng = np.random.default_rng([c, i])
            lines = [
                (36, 750 - 12 * k, 10, " ".join(rng.choice(words, 12)))
                for k in range(60)  # a page full of 10 pt text
            ]
            write_pdf(root / name / f"doc{i}.pdf", [lines, lines[::-1]])


def test_tiles_come_from_split_pdfs_with_their_labels(tmp_path):
    _collections(tmp_path / "docs")
    splits = pdf_splits(tmp_path / "docs")
    assert [p.name for p in splits["val"]] == ["doc4.pdf", "doc4.pdf"]  # every 5th of each collection
    assert len(splits["train"]) == 8
    cfg = DocumentsConfig(
        documents=str(tmp_path / "docs"), train_tiles=6, val_tiles=2, train=LearnConfig(progress=False)
    )
    labels = render_tiles(cfg, tmp_path / "tiles")
    assert sorted(k.split("/")[0] for k in labels) == ["train"] * 6 + ["val"] * 2
    info = json.loads((tmp_path / "tiles" / "labels.json").read_text())
    assert info["tiles"] == labels and info["scale"] == cfg.scale
    for rel, (pdf, page, x0, y0) in info["sources"].items():  # each tile: where it was cut from
        assert pdf.split("/")[0] == rel.split("/")[1] and page in (0, 1)
        rendered = render_page(tmp_path / "docs" / pdf, page, cfg.scale).image
        tile = rendered.crop((x0, y0, x0 + 256, y0 + 256))
        assert np.array_equal(np.asarray(tile), np.asarray(Image.open(tmp_path / "tiles" / rel)))
    grids = np.array(list(labels.values()))
    assert grids.shape == (8, 64) and (grids != 0).mean() > 0.2  # a page full of text labels many cells
    letters = {CLASSES[v] for v in grids.ravel()}
    assert letters <= set(" THEQUICKBROWNFXJMPSVLAZYDG0123456789")  # only what the PDFs say
    assert render_tiles(cfg, tmp_path / "again") == labels  # seeded: the same tiles again


@pytest.mark.slow
def test_the_job_end_to_end(tmp_path):
    """Fetch-layout PDFs -> tiles -> the encode pipeline (local Ray, grey codec) -> three arms, two
    seeds -> report files; figures only checked for range (they go to the report)."""
    from pipeline.jobs.learn_documents import main

    _collections(tmp_path / "docs")
    out = tmp_path / "run"
    argv = [
        "--documents",
        str(tmp_path / "docs"),
        "--output",
        str(out),
        "--samples",
        "6",
        "--val-samples",
        "2",
    ]
    assert (
        main([*argv, "--seeds", "0,1", "--epochs", "1", "--width", "8", "--batch-size", "4", "--no-progress"])
        == 0
    )
    for name in ("report.md", "report.json", "seeds.json", "curves.png", "seeds.png"):
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "report.json").read_text())
    shapes = {name: arm["input_shape"] for name, arm in report["arms"].items()}
    assert shapes == {"latent": [4, 32, 32], "pixel": [1, 64, 64], "full": [1, 256, 256]}  # the grey codec
    seeds = json.loads((out / "seeds.json").read_text())
    assert {arm: len(runs) for arm, runs in seeds.items()} == {"latent": 2, "pixel": 2, "full": 2}
    for runs in seeds.values():
        assert all(0 <= r["final"]["glyph_accuracy"] <= 1 for r in runs)
    assert "## Over seeds" in (out / "report.md").read_text()
    assert report["data"]["train tiles"] == 6 and report["data"]["val tiles"] == 2
