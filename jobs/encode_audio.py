#!/usr/bin/env python
"""Encode an audio corpus into WaLLoC latent shards (WebDataset or Zarr) on Ray, window by window.

Thin entry point: flags and main() in pipeline/jobs/encode_audio.py (installed: `walloc-encode-audio`).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a checkout / --working-dir

from pipeline.jobs.encode_audio import build_parser, main  # noqa: E402, F401

if __name__ == "__main__":
    sys.exit(main())
