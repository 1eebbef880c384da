#!/usr/bin/env python
"""Encode an image corpus into WaLLoC latent shards (WebDataset or Zarr) on Ray.

Thin entry point: flags and main() in pipeline/jobs/encode_imagenet.py (installed: `walloc-encode-images`).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a checkout / --working-dir

from pipeline.jobs.encode_imagenet import build_parser, main  # noqa: E402, F401

if __name__ == "__main__":
    sys.exit(main())
