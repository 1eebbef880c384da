#!/usr/bin/env python
"""Rate-distortion report: bundled (or given) codecs vs the KLT codec, JPEG, WebP and Vorbis.

Thin entry point: flags and main() in pipeline/jobs/evaluate_codec.py (installed: `walloc-evaluate-codec`).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a checkout / --working-dir

from pipeline.jobs.evaluate_codec import build_parser, main  # noqa: E402, F401

if __name__ == "__main__":
    sys.exit(main())
