"""The bundled grey codec: 1 x 256 x 256 -> 4 x 32 x 32 (16x), a closed-form KLT like rgb-16x-klt,
and the codec-by-channels choice the jobs use."""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline import codec as wc
from pipeline.config import DEFAULT_IMAGE_CODEC, image_codec_for
from pipeline.learning.data import image_files
from pipeline.metrics import psnr
from pipeline.training import codec_data as D
from pipeline.training.klt import is_equal_step_klt

SAMPLES = Path(__file__).resolve().parents[2] / "pipeline" / "samples" / "images"


def test_grey_codec_shape_and_held_out_quality():
    assert image_codec_for(3) == DEFAULT_IMAGE_CODEC
    codec = wc.load(image_codec_for(1))
    assert codec.config.channels == 1 and codec.config.latent_dim == 4 and is_equal_step_klt(codec)
    assert codec.latent_shape((1, 256, 256)) == (4, 32, 32)  # 4,096 values = 1 x 64 x 64
    # the sample corpus (crops of the same scikit-image photos, not held out): a sanity figure
    x = torch.stack(
        [D.to_signal(D.center_crop(D.load_image(p, channels=1), 256)) for p in image_files(SAMPLES)]
    )
    assert x.shape == (24, 1, 256, 256)
    z = codec.encode(x)
    assert z.shape == (24, 4, 32, 32) and z.dtype == torch.int8
    value = psnr(x + 0.5, codec.decode(z) + 0.5)  # pooled MSE
    assert 24.5 < value < 25.5, value  # measured: 25.00 dB
    held_out = {f["name"] for f in codec.metadata["training"]["data"]["valid"]["files"]}
    assert held_out == {"cell.png", "chelsea.png", "grass.png", "gravel.png"}  # split by file
