#!/usr/bin/env python
"""Image classification on WaLLoC latents vs pixels at the same input budget, with a report.

Thin entry point: flags and main() in pipeline/jobs/learn_classify.py (installed: `walloc-learn-classify`).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a checkout / --working-dir

from pipeline.jobs.learn_classify import build_parser, main  # noqa: E402, F401

if __name__ == "__main__":
    sys.exit(main())
