"""Codec behaviour beyond the conformance vectors: sizes, padding, bits, modes, validation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.codec import CodecConfig, build
from pipeline.codec.model import centered_padding


def _light2d(**kw) -> torch.nn.Module:
    cfg = dict(kind="2d", channels=3, J=2, latent_dim=8, latent_bits=8, Nd=32, decoder="linear")
    cfg.update(kw)
    return build(CodecConfig(**cfg)).eval()


def _saturating(codec):
    """Scale the 1x1 encoder so latents cover the whole quantizer range."""
    with torch.no_grad():
        codec.encoder.weight.mul_(1e3)
    return codec


@pytest.mark.parametrize("levels", [1, 2, 3, 4, 5])
def test_shapes_for_every_level(levels):
    codec = _light2d(J=levels)
    x = torch.rand(2, 3, 64, 96) - 0.5
    z = codec.encode(x)
    assert z.shape == (2, 8, 64 >> levels, 96 >> levels)
    assert codec.latent_shape((3, 64, 96)) == z.shape[1:]
    assert codec.decode(z).shape == x.shape


@pytest.mark.parametrize("size", [(37, 50), (1, 1), (3, 130), (64, 63)])
def test_odd_sizes_pad_reflect_and_crop(size):
    codec = _light2d(J=3)
    x = torch.rand(1, 3, *size) - 0.5
    z = codec.encode(x)
    assert z.shape[-2:] == tuple(-(-s // 8) for s in size)
    assert codec.decode(z, size=size).shape == x.shape
    # encode == encode of the explicitly padded signal (reflect where the side allows it)
    pads = [centered_padding(s, 8) for s in size]
    flat = [pads[1][0], pads[1][1], pads[0][0], pads[0][1]]
    mode = "reflect" if all(max(p) < s for p, s in zip(pads, size, strict=True)) else "replicate"
    assert torch.equal(z, codec.encode(F.pad(x, flat, mode=mode)))
    # and decode's crop is the centre of the padded reconstruction
    full = codec.decode(z)
    top, left = pads[0][0], pads[1][0]
    assert torch.equal(codec.decode(z, size=size), full[..., top : top + size[0], left : left + size[1]])


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
def test_latents_stay_in_range_for_every_bit_depth(bits):
    codec = _saturating(_light2d(latent_bits=bits))
    x = torch.rand(2, 3, 32, 32) - 0.5
    z = codec.encode(x)
    top = 2 ** (bits - 1) - 1
    assert z.dtype == torch.int8
    assert z.min() == -top and z.max() == top  # saturated: both ends reached, never exceeded
    assert codec.decode(z).abs().max() <= 0.5


def test_training_adds_uniform_noise_eval_rounds():
    codec = _light2d()
    x = torch.rand(2, 3, 32, 32) - 0.5
    codec.train()
    noisy = codec(x)["latent"]
    assert (noisy != noisy.round()).float().mean() > 0.9
    codec.eval()
    with torch.no_grad():
        rounded = codec(x)["latent"]
    assert torch.equal(rounded, rounded.round())
    with torch.no_grad():
        continuous = codec.compander.to_uniform(codec.encode_continuous(x))
    assert (noisy - continuous).abs().max() <= 0.5 + 1e-4  # additive noise in [-0.5, 0.5]
    assert (rounded - continuous).abs().max() <= 0.5 + 1e-4
    codec.train()
    codec.compander.round_in_training = True  # decoder-only training: the integers it will decode
    assert torch.equal(codec(x)["latent"], rounded)


def test_training_gradients_reach_the_encoder():
    codec = _light2d().train()
    x = torch.rand(2, 3, 32, 32) - 0.5
    loss = F.mse_loss(codec(x)["x_hat"], x)
    loss.backward()
    assert codec.encoder.weight.grad is not None and codec.encoder.weight.grad.abs().sum() > 0


def test_one_dimensional_codec_shapes():
    cfg = CodecConfig(kind="1d", channels=2, J=4, latent_dim=8, Nd=16, post_filter=True, decoder="linear")
    codec = build(cfg).eval()
    x = torch.rand(3, 2, 1000) - 0.5  # not a multiple of 16: padded to 1008
    z = codec.encode(x)
    assert z.shape == (3, 8, 1008 // 16 + 2)
    assert codec.latent_shape((2, 1000)) == z.shape[1:]
    assert codec.decode(z, size=(1000,)).shape == x.shape


def test_multispectral_and_grayscale_channels():
    for channels in (1, 4, 13):
        codec = _light2d(channels=channels)
        x = torch.rand(1, channels, 32, 32) - 0.5
        assert codec.decode(codec.encode(x)).shape == x.shape


def test_input_validation_messages():
    codec = _light2d()
    with pytest.raises(ValueError, match="takes 3 channels"):
        codec.encode(torch.zeros(1, 4, 32, 32))
    with pytest.raises(ValueError, match="4 dims"):
        codec.encode(torch.zeros(3, 32, 32))
    with pytest.raises(TypeError, match="float"):
        codec.encode(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(latent_bits=9), "latent_bits"),
        (dict(latent_bits=1), "latent_bits"),
        (dict(kind="3d"), "kind"),
        (dict(lightweight_encode=False, Ne=None), "Ne"),
        (dict(post_filter=True), "post_filter"),
        (dict(J=0), "J"),
    ],
)
def test_config_validation(kwargs, message):
    cfg = dict(kind="2d", channels=3, J=2, latent_dim=8)
    cfg.update(kwargs)
    with pytest.raises(ValueError, match=message):
        CodecConfig(**cfg)


def test_config_round_trips_through_dict():
    cfg = CodecConfig(kind="1d", channels=2, J=8, latent_dim=32, latent_bits=6, post_filter=True)
    assert CodecConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown codec config keys"):
        CodecConfig.from_dict({**cfg.to_dict(), "bogus": 1})
