#!/usr/bin/env python
"""Reading small print on real PDF pages: grey latents vs 64x64 vs 256x256 pixels, 3 seeds.

Thin entry point: flags and main() in pipeline/jobs/learn_documents.py (installed: `walloc-learn-documents`).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a checkout / --working-dir

from pipeline.jobs.learn_documents import build_parser, main  # noqa: E402, F401

if __name__ == "__main__":
    sys.exit(main())
