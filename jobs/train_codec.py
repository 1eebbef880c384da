#!/usr/bin/env python
"""Train a WaLLoC codec (or fit the closed-form KLT codec) and write it in the project format.

Thin entry point: flags and main() in pipeline/jobs/train_codec.py (installed: `walloc-train-codec`).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a checkout / --working-dir

from pipeline.jobs.train_codec import build_parser, main  # noqa: E402, F401

if __name__ == "__main__":
    sys.exit(main())
