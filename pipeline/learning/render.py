"""Synthetic document pages: random characters in a grid, rendered in fonts installed on the machine.

A page is 256x256: an 8x8 grid of 32x32-pixel cells, one character (or a blank) per cell, one font
and size per page, small random offsets per character, on a paper-like background (tinted base,
low-frequency shading, grain, sometimes faint ruled lines). The text is random (no language model
can help), the glyphs are real font outlines (fc-list: Debian's fonts-dejavu on this machine).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

CHARSET = " ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"  # class 0 is a blank cell
GRID, CELL = 8, 32  # 8x8 cells of 32 px = 256x256; one cell = 4x4 latent positions = 8x8 pixels at 64x64
PAGE = GRID * CELL


def installed_fonts() -> list[Path]:
    """TrueType/OpenType fonts fontconfig knows (fc-list), else those under /usr/share/fonts."""
    try:
        out = subprocess.run(
            ["fc-list", "--format", "%{file}\n"], capture_output=True, text=True, timeout=30
        ).stdout
        files = {Path(line.strip()) for line in out.splitlines() if line.strip()}
    except (OSError, subprocess.SubprocessError):
        files = set()
    if not files:
        files = set(Path("/usr/share/fonts").rglob("*.[ot]tf"))
    fonts = sorted(p for p in files if p.suffix.lower() in (".ttf", ".otf") and p.is_file())
    if not fonts:
        raise FileNotFoundError("no TrueType/OpenType fonts installed (apt-get install fonts-dejavu-core)")
    return fonts


@dataclass(frozen=True)
class Page:
    image: Image.Image  # RGB 256x256
    text: str  # GRID*GRID characters, row-major; ' ' = blank cell
    font: str


def _background(rng: np.random.Generator) -> np.ndarray:
    base = rng.uniform(205, 250) + rng.uniform(-12, 12, size=3) * np.array([1.0, 0.8, 0.3])  # warm/cool paper
    yy, xx = np.mgrid[0:PAGE, 0:PAGE] / PAGE
    shade = rng.uniform(-18, 18) * (xx - 0.5) + rng.uniform(-18, 18) * (yy - 0.5)  # uneven lighting
    grain = rng.normal(0, rng.uniform(1, 5), size=(PAGE, PAGE, 1))
    return np.clip(base[None, None, :] + shade[..., None] + grain, 0, 255)


def render_page(rng: np.random.Generator, fonts: list[Path], blank_p: float = 0.12) -> Page:
    """One page with random characters; every random choice comes from `rng` (seeded pages)."""
    font_path = fonts[int(rng.integers(len(fonts)))]
    size = int(rng.integers(12, 23))  # cap height ~9-16 px at 256: 2-4 px at 64x64
    font = ImageFont.truetype(str(font_path), size)
    img = Image.fromarray(_background(rng).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    if rng.random() < 0.4:  # ruled paper
        rule = tuple(int(v) for v in rng.uniform(150, 210, size=3))
        for r in range(1, GRID):
            draw.line([(0, r * CELL - 1), (PAGE, r * CELL - 1)], fill=rule, width=1)
    ink = tuple(int(v) for v in rng.uniform(0, 90, size=3))
    chars = []
    for r in range(GRID):
        for c in range(GRID):
            ch = " " if rng.random() < blank_p else CHARSET[1 + int(rng.integers(len(CHARSET) - 1))]
            chars.append(ch)
            if ch == " ":
                continue
            x = c * CELL + CELL / 2 + rng.uniform(-3, 3)
            y = r * CELL + CELL / 2 + rng.uniform(-3, 3)
            draw.text((x, y), ch, font=font, fill=ink, anchor="mm")
    if rng.random() < 0.3:  # a slightly soft scan
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    return Page(image=img, text="".join(chars), font=font_path.name)


def text_to_labels(text: str) -> np.ndarray:
    """GRID*GRID characters -> (GRID, GRID) class indices."""
    return np.array([CHARSET.index(ch) for ch in text], dtype=np.int64).reshape(GRID, GRID)


def labels_to_lines(labels: np.ndarray) -> list[str]:
    """(GRID, GRID) class indices -> GRID strings (one per grid row)."""
    return ["".join(CHARSET[int(i)] for i in row) for row in labels]
