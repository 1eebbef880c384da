"""Fixtures of the loader tests: a small real codec (its hash names runs built by hand).

Ray: `ray_session` in tests/conftest.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # synth.py


@pytest.fixture(scope="session")
def small_codec(tmp_path_factory) -> str:
    """Path of a tiny image codec (J=3, 12 channels) saved in the project format."""
    from pipeline.codec import CodecConfig, build, save

    codec = build(CodecConfig(kind="2d", channels=3, J=3, latent_dim=12, Nd=32, decoder="linear"))
    with torch.no_grad():
        codec.encoder.weight.mul_(50)  # latents that use the int8 range
    return str(save(codec, tmp_path_factory.mktemp("codec") / "small"))
