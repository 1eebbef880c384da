"""Reading small print on real PDF pages: grey latents (4x32x32) vs 64x64 pixels vs 256x256 pixels.

    data/documents/<collection>/*.pdf (scripts/fetch_documents.py: TeX Live and R manuals, born digital)
      -> a page rendered grey by PDFium at `scale` px/pt (180 dpi: 10 pt body text has x-height ~11 px)
      -> 256x256 tiles (PNG, 8x8 cells of 32 px) + per-cell labels from the page's text layer
      -> encode pipeline, grey codec (1x256x256 -> 4x32x32, the size of 1x64x64) -> WebDataset shards

    latent arm:  4x32x32 latents (standardised per channel)      --cell stem, cell 1--\
    pixel arm:   the tile at 1x64x64 (pipeline's resize rule)    --cell stem, cell 2---->-- same trunk,
    full arm:    the tile at 1x256x256 (the ceiling, 16x input)  --cell stem, cell 8--/    head per cell

Label of a cell: the glyph whose text-layer box centre is nearest the cell's centre, if within
`radius` px of it on both axes, as one of 38 classes (blank, A-Z with case folded, 0-9, any other
glyph); blank where no glyph is that close. At 64x64 such a glyph is ~3 px tall, so the 64x64 arm can see
where text is but not which letters it is: the task is one where resolution matters, which is what
the full arm measures. PDFs are split by file (every 5th of each collection is held out), so no page
of a held-out document is trained on.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..config import image_codec_for
from .arms import ARMS  # latent, pixel (64x64), full (256x256)
from .data import (
    IMAGE_SIDE,
    LATENT_SIDE,
    PIXEL_SIDE,
    Standardizer,
    encode_folder,
    load_pixels,
    read_latents,
    source_path,
    split_of,
    to_model_pixels,
)
from .loop import ArmResult, LearnConfig, interleaved_speed, predict, train_arm
from .measure import pick_device
from .models import CellGridReader, NetConfig
from .pdf_text import page_count, render_page
from .report import Report, job_config, plot_seeds, seed_summary, seed_table, summary_table, write_report

CLASSES = " ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789*"  # 0: blank cell, last: any other glyph
GRID, CELL = 8, IMAGE_SIDE // 8  # 8x8 cells of 32 px: one cell = 4x4 latent positions = 8x8 px at 64
LABELS = "labels.json"  # <tiles>/labels.json: relative path -> 64 class indices (row-major)


@dataclass(frozen=True)
class DocumentsConfig:
    documents: str = "data/documents"  # <collection>/*.pdf (scripts/fetch_documents.py)
    output: str = "out/learn-documents"
    train_tiles: int = 1200
    val_tiles: int = 240
    scale: float = 2.5  # px per PDF point (180 dpi): 10 pt body text has x-height ~11 px at 256, ~3 at 64
    radius: float = 8.0  # px: a glyph labels a cell when its centre is this close to the cell's
    min_glyphs: int = 80  # a tile is kept when at least this many glyph centres fall inside it
    latents: str | None = None  # a run of a previous call (its tiles/ folder must still exist)
    codec: str | None = None  # None: the bundled grey codec (pages are rendered grey)
    seeds: tuple[int, ...] = (0, 1, 2)
    dropout: float = 0.0  # before the per-cell head, every arm
    device: str = "auto"
    net: NetConfig = field(default_factory=NetConfig)
    train: LearnConfig = field(default_factory=lambda: LearnConfig(epochs=12))


def char_class(ch: str) -> int:
    """A glyph's class: letters case-folded, digits, anything else the last class."""
    up = ch.upper()
    return CLASSES.index(up) if len(up) == 1 and up in CLASSES[1:-1] else len(CLASSES) - 1


def cell_labels(chars: list[str], centres: np.ndarray, x0: float, y0: float, radius: float) -> np.ndarray:
    """(GRID, GRID) classes of the tile whose top-left corner is (x0, y0) in page pixels.

    `centres` (N, 2) are glyph box centres (x, y) in the same pixels; a cell takes the nearest glyph
    within `radius` of its centre on both axes, else blank."""
    cy, cx = np.mgrid[0:GRID, 0:GRID] * CELL + CELL / 2
    cells = np.stack([cx.ravel() + x0, cy.ravel() + y0], axis=1)  # (64, 2)
    out = np.zeros(GRID * GRID, dtype=np.int64)
    if len(centres):
        d = np.abs(cells[:, None, :] - centres[None, :, :])  # (64, N, 2)
        near = (d <= radius).all(axis=2)
        dist = np.where(near, np.hypot(d[..., 0], d[..., 1]), np.inf)
        best = dist.argmin(axis=1)
        hit = np.isfinite(dist[np.arange(len(cells)), best])
        out[hit] = [char_class(chars[j]) for j in best[hit]]
    return out.reshape(GRID, GRID)


def pdf_splits(documents: Path) -> dict[str, list[Path]]:
    """{'train': [...], 'val': [...]}: every 5th PDF of each collection (sorted) is held out."""
    splits: dict[str, list[Path]] = {"train": [], "val": []}
    collections = sorted(p for p in documents.iterdir() if p.is_dir())
    if not collections:
        raise FileNotFoundError(f"{documents}: no collection folders (run scripts/fetch_documents.py)")
    for folder in collections:
        for i, pdf in enumerate(sorted(folder.glob("*.pdf"))):
            splits["val" if i % 5 == 4 else "train"].append(pdf)
    return splits


def render_tiles(cfg: DocumentsConfig, dest: Path, seed: int = 0) -> dict[str, list[int]]:
    """Write dest/{train,val}/<collection>/<n>.png tiles and dest/labels.json; returns the labels.

    Tile n comes from PDF n of a seeded order of the split's PDFs (so tiles spread over all of them),
    at a seeded page and position, a few tries to find one with text, else from the next PDF; a PDF
    that PDFium cannot open is skipped and counted."""
    labels: dict[str, list[int]] = {}
    sources: dict[str, list] = {}  # tile -> [pdf, page index, x0, y0]: where it was cut from
    skipped = 0
    for split, pdfs in pdf_splits(Path(cfg.documents)).items():
        want = cfg.train_tiles if split == "train" else cfg.val_tiles
        order = np.random.default_rng([seed, split == "val"]).permutation(len(pdfs))
        pages: dict[Path, int] = {}
        for n in tqdm(range(want), desc=f"render {split}", disable=not cfg.train.progress):
            for attempt in range(len(pdfs)):  # the next PDF in the seeded order that gives a tile
                pdf = pdfs[order[(n + attempt) % len(pdfs)]]
                if pdf not in pages:
                    try:
                        pages[pdf] = page_count(pdf)
                    except Exception:  # noqa: BLE001 - a PDF PDFium cannot read gives no tiles
                        pages[pdf], skipped = 0, skipped + 1
                rng = np.random.default_rng([seed, split == "val", n, attempt])
                tile = _find_tile(pdf, pages[pdf], rng, cfg) if pages[pdf] else None
                if tile is not None:
                    break
            else:
                raise RuntimeError(f"{cfg.documents}: no PDF gives a tile with {cfg.min_glyphs} glyphs")
            image, y, where = tile
            rel = f"{split}/{pdf.parent.name}/{n:05d}.png"
            sources[rel] = [f"{pdf.parent.name}/{pdf.name}", *where]
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            image.save(dest / rel)
            labels[rel] = y.ravel().tolist()
    info = {
        "scale": cfg.scale,
        "radius": cfg.radius,
        "skipped_pdfs": skipped,
        "tiles": labels,
        "sources": sources,
    }
    (dest / LABELS).write_text(json.dumps(info))
    return labels


def _find_tile(pdf: Path, pages: int, rng: np.random.Generator, cfg: DocumentsConfig, tries: int = 6):
    for _ in range(tries):
        index = int(rng.integers(pages))
        page = render_page(pdf, index, cfg.scale)
        w, h = page.image.size
        if w < IMAGE_SIDE or h < IMAGE_SIDE or len(page.glyphs) < cfg.min_glyphs:
            continue
        chars = [g.char for g in page.glyphs]
        centres = np.array([(g.cx, g.cy) for g in page.glyphs])
        for _ in range(tries):
            x0, y0 = int(rng.integers(w - IMAGE_SIDE + 1)), int(rng.integers(h - IMAGE_SIDE + 1))
            inside = (
                (centres[:, 0] >= x0)
                & (centres[:, 0] < x0 + IMAGE_SIDE)
                & (centres[:, 1] >= y0)
                & (centres[:, 1] < y0 + IMAGE_SIDE)
            )
            if inside.sum() >= cfg.min_glyphs:
                tile = page.image.crop((x0, y0, x0 + IMAGE_SIDE, y0 + IMAGE_SIDE))
                return tile, cell_labels(chars, centres, x0, y0, cfg.radius), (index, x0, y0)
    return None


def make_model(arm: str, in_channels: int, net: NetConfig, dropout: float = 0.0) -> CellGridReader:
    """The same CellGridReader for every arm, as classify's CellClassifier: a cell stem embeds each
    position of the trunk's 32x32 grid (cell 1 on latents, 2 on 64x64 pixels, 8 on 256x256 pixels)."""
    side = ARMS[arm].side
    cell = side // LATENT_SIDE if side else 1
    return CellGridReader(in_channels, cell, len(CLASSES), net, dropout)


def glyph_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the cells that hold a glyph: two thirds of the cells are blank, and
    learning where text is (which a 64x64 image shows) would otherwise dominate learning what it says."""
    return F.cross_entropy(logits, y, ignore_index=0)


def cell_metrics(logits: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Accuracy over the cells that hold a glyph (blank cells are neither trained on nor scored), and
    the loss."""
    text = y != 0
    return {
        "glyph_accuracy": float((logits.argmax(1)[text] == y[text]).float().mean()),
        "val_loss": glyph_loss(logits, y).item(),
    }


def run(cfg: DocumentsConfig) -> Report:
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    progress = cfg.train.progress
    tiles_dir = out / "tiles"
    if cfg.latents:
        root = cfg.latents
    else:
        render_tiles(cfg, tiles_dir)
        root = encode_folder(tiles_dir, out / "latents", cfg.codec or image_codec_for(1))
    ls = read_latents(root, progress)
    label_file = source_path(ls.meta[0]).parents[2] / LABELS  # <tiles>/<split>/<collection>/<n>.png
    info = json.loads(label_file.read_text())
    y = torch.tensor([info["tiles"][m["path"]] for m in ls.meta]).reshape(-1, GRID, GRID)
    splits = [split_of(m) for m in ls.meta]
    tr = [i for i, s in enumerate(splits) if s == "train"]
    va = [i for i, s in enumerate(splits) if s == "val"]
    train, val = ls.select(tr), ls.select(va)
    y_tr, y_va = y[tr], y[va]
    norm = Standardizer.fit(train.z)
    paths_tr = [source_path(m) for m in train.meta]
    paths_va = [source_path(m) for m in val.meta]
    inputs = {
        "latent": (norm(train.z), norm(val.z)),
        "pixel": tuple(
            to_model_pixels(load_pixels(p, PIXEL_SIDE, progress, 1)) for p in (paths_tr, paths_va)
        ),
        "full": tuple(to_model_pixels(load_pixels(p, IMAGE_SIDE, progress, 1)) for p in (paths_tr, paths_va)),
    }

    results: dict[str, list[ArmResult]] = {arm: [] for arm in ARMS}
    trained = {}
    for seed in cfg.seeds:
        tcfg = replace(cfg.train, seed=seed)
        for arm in ARMS:
            x_tr, x_va = inputs[arm]
            torch.manual_seed(seed)
            model = make_model(arm, x_tr.shape[1], cfg.net, cfg.dropout)

            def evaluate(m, x_va=x_va):
                return cell_metrics(predict(m, x_va, device), y_va)

            results[arm].append(
                train_arm(f"{arm} s{seed}", model, x_tr, y_tr, glyph_loss, evaluate, tcfg, device)
            )
            if seed == cfg.seeds[0]:
                trained[arm] = (model, x_tr, y_tr)
    for arm, speed in interleaved_speed(trained, glyph_loss, cfg.train, device).items():
        for r in results[arm]:
            r.samples_per_s = speed
    first = {arm: results[arm][0] for arm in ARMS}
    for arm in ARMS:
        first[arm].name = arm

    glyph = {arm: [r.final["glyph_accuracy"] for r in results[arm]] for arm in ARMS}
    mean = {arm: statistics.fmean(v) for arm, v in glyph.items()}
    gap = mean["full"] - mean["pixel"]
    counts = torch.bincount(y_tr.ravel(), minlength=len(CLASSES))
    text_classes = counts[1:].float() / counts[1:].sum()
    report = Report(
        task="documents",
        title="Reading small print on real PDF pages: grey latents"
        f" ({'x'.join(map(str, train.z.shape[1:]))}) vs pixels 1x{PIXEL_SIDE}x{PIXEL_SIDE}"
        f" vs 1x{IMAGE_SIDE}x{IMAGE_SIDE}",
        metric="glyph_accuracy",
        arms=first,
        data={
            "latents": root,
            "tiles": str(label_file.parent),
            "train tiles": len(tr),
            "val tiles": len(va),
            "cells per tile": GRID * GRID,
            "classes": f"{len(CLASSES)} (blank, A-Z case-folded, 0-9, other glyph)",
            "render scale (px per pt)": cfg.scale,
            "text cells in val": round(float((y_va != 0).float().mean()), 4),
            "most frequent text class in train (chance on text cells)": round(float(text_classes.max()), 4),
            "PDFs PDFium could not open": info.get("skipped_pdfs", 0),
        },
        notes=[
            "Real born-digital pages (TeX Live package manuals, R manuals from Debian), labels from the "
            "PDFs' text layers: exact glyph identities and positions, no transcription.",
            "Held-out tiles come from held-out PDFs (every 5th of each collection), never from trained "
            "pages.",
            f"Seeds {list(cfg.seeds)}: the table above is seed {cfg.seeds[0]}; the seed table gives mean "
            "and spread (sample standard deviation) over all seeds.",
            "Same trunk, head, optimizer, epochs and batches for all arms; every arm reaches the trunk's "
            "32x32 grid through a cell stem of the same depth (models.cell_stem: 1x1 then 1x1 on latents, "
            "1x1 then 2x2 on 64x64 pixels, 4x4 then 2x2 on 256x256 pixels; then a 3x3 conv), as in "
            "classify.",
        ],
        config=job_config("documents", cfg, device),
        extra={
            "full - pixel gap (glyph accuracy, mean)": round(gap, 4),
            "latent recovers (share of the gap)": round((mean["latent"] - mean["pixel"]) / gap, 3)
            if gap > 0
            else float("nan"),
        },
        figures=[("seeds.png", "held-out glyph accuracy per arm: every seed and the mean")],
    )
    plot_seeds(results, "glyph_accuracy", out / "seeds.png")
    write_report(report, out)
    table = seed_table(seed_summary(results, "glyph_accuracy"))
    with open(out / "report.md", "a") as f:
        f.write("\n## Over seeds\n\n" + table + "\n")
    (out / "seeds.json").write_text(
        json.dumps({arm: [asdict(r) for r in rs] for arm, rs in results.items()}, indent=1, default=str)
    )
    print(summary_table(report))
    print(table)
    return report
