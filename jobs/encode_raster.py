#!/usr/bin/env python
"""Encode multi-band TIFF rasters (remote sensing band stacks, DEMs...) into WaLLoC latent shards.

Thin entry point: flags and main() in pipeline/jobs/encode_raster.py (installed: `walloc-encode-raster`).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runnable from a checkout / --working-dir

from pipeline.jobs.encode_raster import build_parser, main  # noqa: E402, F401

if __name__ == "__main__":
    sys.exit(main())
