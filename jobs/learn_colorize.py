#!/usr/bin/env python
"""Colorization on latents vs 64x64 pixels vs 256x256 pixels (same U-Net, N seeds), with a report.

Thin entry point: flags and main() in pipeline/jobs/learn_colorize.py (installed: `walloc-learn-colorize`).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a checkout / --working-dir

from pipeline.jobs.learn_colorize import build_parser, main  # noqa: E402, F401

if __name__ == "__main__":
    sys.exit(main())
