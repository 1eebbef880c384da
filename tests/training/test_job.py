"""The training job end to end on a tiny image folder: KLT baseline, then a residual codec trained on it."""

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.codec import load
from pipeline.training.codec_loop import CodecTrainConfig
from pipeline.training.job import CodecJob, run_job

from .helpers import smooth_image


def _photos(root, n=10):
    for i in range(n):
        rgb = ((smooth_image(i, 48).permute(1, 2, 0) + 0.5) * 255).round().byte().numpy()
        Image.fromarray(np.ascontiguousarray(rgb)).save(root / f"img{i:02d}.png")


def _job(tmp_path, name, **kw):
    train = CodecTrainConfig(batch_size=4, steps=kw.pop("steps", 0), lr=1e-3, warmup_steps=2, val_every=3,
                        ckpt_every=3, device="cpu")  # fmt: skip
    base = dict(kind="2d", data=[str(tmp_path / "photos")], out=str(tmp_path / name), J=2, latent_dim=6,
                Nd=32, crop=16, klt_batches=2, kinds=(), klt_gain=10.0, train=train)  # fmt: skip
    return CodecJob(**{**base, **kw})


def test_frozen_encoder_residual_codec_shares_the_klt_codecs_latents(tmp_path):
    (tmp_path / "photos").mkdir()
    _photos(tmp_path / "photos")
    klt = load(run_job(_job(tmp_path, "klt", decoder="linear")))
    deep = load(run_job(_job(tmp_path, "deep", decoder="residual", init="klt", freeze_encoder=True, steps=6)))
    assert deep.config.decoder == "residual" and klt.config.decoder == "linear"
    meta = deep.metadata["training"]
    assert meta["steps"] == 6 and meta["klt_gain"] == 10.0 and meta["freeze_encoder"] is True
    # same split, same KLT, frozen: the trained codec writes exactly the baseline's latents
    assert torch.equal(deep.encoder.weight, klt.encoder.weight)
    x = smooth_image(99, 32).unsqueeze(0)
    assert torch.equal(deep.encode(x), klt.encode(x))
    # while its decoder did train: the deep half no longer outputs zeros
    assert deep.decoder.deep.conv_out.weight.abs().sum() > 0
    assert deep.hash != klt.hash


def test_init_codec_fine_tunes_from_a_codec_and_refuses_another_config(tmp_path):
    (tmp_path / "photos").mkdir()
    _photos(tmp_path / "photos")
    first = load(
        run_job(_job(tmp_path, "first", decoder="residual", init="klt", freeze_encoder=True, steps=3))
    )
    again = _job(tmp_path, "again", decoder="residual", init_codec=str(tmp_path / "first.json"),
                 freeze_encoder=True, steps=0)  # fmt: skip
    same = load(run_job(again))  # zero steps: the start point itself
    assert same.hash == first.hash
    assert same.metadata["training"]["init"] == f"codec {tmp_path / 'first.json'}"
    wider = _job(tmp_path, "wider", decoder="residual", Nd=64, init_codec=str(tmp_path / "first.json"))
    with pytest.raises(ValueError, match="init codec"):
        run_job(wider)
