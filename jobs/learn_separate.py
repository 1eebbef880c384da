#!/usr/bin/env python
"""Music source separation on audio latents vs the waveform at the same input budget.

Thin entry point: flags and main() in pipeline/jobs/learn_separate.py (installed: `walloc-learn-separate`).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a checkout / --working-dir

from pipeline.jobs.learn_separate import build_parser, main  # noqa: E402, F401

if __name__ == "__main__":
    sys.exit(main())
