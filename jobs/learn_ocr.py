#!/usr/bin/env python
"""Character recognition on document-like pages, latents vs pixels at the same budget, with a report.

Thin entry point: flags and main() in pipeline/jobs/learn_ocr.py (installed: `walloc-learn-ocr`).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a checkout / --working-dir

from pipeline.jobs.learn_ocr import build_parser, main  # noqa: E402, F401

if __name__ == "__main__":
    sys.exit(main())
