"""Fixtures of the end-to-end pipeline tests: a codec, a corpus, a run (Ray: tests/conftest.py).

The codec is a KLT ("PCA") codec fitted to the bundled sample photos: a 1x1 encoder onto the top-12
principal directions of the wavelet packet coefficients, and its transpose as the linear decoder.
It needs no training and reconstructs photos at 20-40 dB PSNR, so a test can tell a latent that
belongs to its image from one that belongs to another image (or to none).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from e2e_helpers import SAMPLE_IMAGES, SIZE, encode


def _fit_klt_codec(path: Path) -> Path:
    from pipeline.codec import CodecConfig, build, save
    from pipeline.preprocess.image import ImagePolicy, decode_image, to_codec_input

    policy = ImagePolicy(size=SIZE, crop="center", channels=3, multiple=8)
    files = sorted(SAMPLE_IMAGES.glob("*/*.JPEG"))
    x = np.stack([to_codec_input(decode_image(f.read_bytes(), policy).array) for f in files])
    codec = build(CodecConfig(kind="2d", channels=3, J=3, latent_dim=12, Nd=32, decoder="linear"))
    with torch.no_grad():
        bands = codec.analysis(torch.from_numpy(x))  # (B, 192, 8, 8)
        v = bands.permute(0, 2, 3, 1).reshape(-1, bands.shape[1]).double()
        eigval, eigvec = torch.linalg.eigh(v.T @ v / v.shape[0])
        eigval, eigvec = eigval.flip(0)[:12], eigvec.flip(1)[:, :12]
        gain = codec.compander.scale / eigval.clamp_min(1e-12).sqrt()  # unit Gaussian -> compander's std
        codec.encoder.weight.copy_((eigvec.T * gain[:, None]).float()[:, :, None, None])
        codec.encoder.bias.zero_()
        codec.decoder.weight.copy_((eigvec / gain[None, :]).float()[:, :, None, None])
        codec.decoder.bias.zero_()
    return save(codec, path, name="klt-test")


@pytest.fixture(scope="session")
def klt_codec(tmp_path_factory) -> Path:
    """Path of the fitted KLT codec (project format: .json + .safetensors)."""
    return _fit_klt_codec(tmp_path_factory.mktemp("codec") / "klt")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """ImageNet layout: the 24 bundled photos in 4 class folders, plus one corrupt .JPEG (25 inputs)."""
    root = tmp_path_factory.mktemp("corpus") / "train"
    shutil.copytree(SAMPLE_IMAGES, root)
    rng = np.random.default_rng(0)
    (root / "n00000005" / "n00000005_corrupt.JPEG").write_bytes(rng.bytes(3000))
    return root


@pytest.fixture(scope="session")
def reference_run(ray_session, tmp_path_factory, corpus, klt_codec) -> Path:
    """An uninterrupted standard WebDataset run of `corpus`: what other runs must reproduce exactly."""
    output = tmp_path_factory.mktemp("reference") / "wds"
    summary = encode(corpus, output, klt_codec)
    assert not summary.failed_shards
    return output
