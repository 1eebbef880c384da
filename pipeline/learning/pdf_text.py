"""Born-digital PDF pages: rendered pixels and the text layer's glyph positions, in the same frame.

A PDF typeset by TeX or R says, in its text layer, which character each glyph is and where its box
lies, so a rendered page comes with exact labels (no transcription, no OCR of our own). pypdfium2
(PDFium) renders and reads both; this module turns its PDF-point boxes (origin bottom-left) into
pixel coordinates of the rendered bitmap (origin top-left) at the same scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

POINTS_PER_INCH = 72.0


@dataclass(frozen=True)
class Glyph:
    char: str
    cx: float  # box centre, pixels of the rendered page (x right, y down)
    cy: float
    height: float  # box height in pixels (tight box: a glyph's ink, not its line)


@dataclass(frozen=True)
class RenderedPage:
    image: Image.Image  # grey ("L"), the whole page at `scale` pixels per PDF point
    glyphs: list[Glyph]  # every printable glyph of the text layer (no spaces, no line breaks)
    scale: float


def page_count(path: str | Path) -> int:
    with _Opened(path) as doc:
        return len(doc)


def render_page(path: str | Path, index: int, scale: float) -> RenderedPage:
    """Page `index` of a PDF rendered grey at `scale` (pixels per point; 1.0 = 72 dpi) and its glyphs."""
    import pypdfium2.raw as raw

    with _Opened(path) as doc:
        page = doc[index]
        # the rendered area is the page's crop box, which need not start at the PDF origin
        left0, _, _, top0 = page.get_bbox()
        image = page.render(scale=scale, grayscale=True).to_pil().convert("L")
        text = page.get_textpage()
        glyphs = []
        for i in range(text.count_chars()):
            char = chr(raw.FPDFText_GetUnicode(text, i))
            if not char.isprintable() or char.isspace():
                continue
            left, bottom, right, top = text.get_charbox(i, loose=False)
            if right <= left or top <= bottom:  # generated characters (e.g. hyphens PDFium adds) have no box
                continue
            glyphs.append(
                Glyph(
                    char=char,
                    cx=((left + right) / 2 - left0) * scale,
                    cy=(top0 - (bottom + top) / 2) * scale,
                    height=(top - bottom) * scale,
                )
            )
        text.close()
        page.close()
    return RenderedPage(image=image, glyphs=glyphs, scale=scale)


class _Opened:
    """pypdfium2's PdfDocument as a context manager that always closes the file."""

    def __init__(self, path: str | Path):
        import pypdfium2 as pdfium

        self.doc = pdfium.PdfDocument(str(path))

    def __enter__(self):
        return self.doc

    def __exit__(self, *exc) -> None:
        self.doc.close()
