"""Encoder hashes: latents written by one codec decode with any codec of the same encoder (another
decoder), and are refused by a codec with another encoder; version-1 headers still read."""

from __future__ import annotations

import copy
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from pipeline.codec import CheckpointError, CodecConfig, build, entropy, load, load_project, save
from pipeline.codec.entropy import LatentFormatError
from pipeline.config import DEFAULT_IMAGE_INPUT

METHODS = sorted(entropy.METHODS)


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """A bundled sample photo, 64 x 72 (odd multiple of 8 on one side), in [-0.5, 0.5]."""
    path = sorted(Path(DEFAULT_IMAGE_INPUT).rglob("*.JPEG"))[0]
    with Image.open(path) as image:
        rgb = np.asarray(ImageOps.fit(image.convert("RGB"), (72, 64)), dtype=np.float32)
    return torch.from_numpy(rgb / 255 - 0.5).permute(2, 0, 1)[None].contiguous()


def test_bundled_image_codecs_share_their_encoder():
    klt, deep, audio = load("rgb-16x-klt"), load("rgb-16x"), load("stereo-44k-klt")
    assert klt.hash != deep.hash
    assert klt.encoder_hash == deep.encoder_hash
    assert audio.encoder_hash not in (klt.encoder_hash, klt.hash)
    for codec in (klt, deep, audio):  # recorded in the JSON, verified on load, and as computed
        recorded = json.loads(Path(codec.source).read_text())["encoder_hash"]
        codec.frozen_encoder_hash = None
        assert codec.encoder_hash == recorded
        assert codec.identity() == {
            "name": codec.name,
            "hash": codec.hash,
            "encoder_hash": recorded,
            "config": codec.config.to_dict(),
        }


def test_encoder_hash_covers_the_encoder_and_nothing_else():
    cfg = CodecConfig(kind="2d", channels=3, J=2, latent_dim=4, Nd=32, decoder="residual")
    a = build(cfg)
    b = copy.deepcopy(a)
    with torch.no_grad():
        b.decoder.linear.weight.add_(1)
    assert a.hash != b.hash and a.encoder_hash == b.encoder_hash
    with torch.no_grad():
        b.encoder.bias.add_(1e-3)
    assert b.encoder_hash != a.encoder_hash
    wider = build(CodecConfig(kind="2d", channels=3, J=2, latent_dim=4, Nd=64, decoder="residual"))
    wider.encoder.load_state_dict(a.encoder.state_dict())
    assert wider.encoder_hash == a.encoder_hash  # decoder width is the decoder's
    fewer_bits = build(CodecConfig(kind="2d", channels=3, J=2, latent_dim=4, latent_bits=6, Nd=32))
    fewer_bits.encoder.load_state_dict(a.encoder.state_dict())
    assert fewer_bits.encoder_hash != a.encoder_hash  # the quantizer is the encoder's


@pytest.mark.parametrize("method", METHODS)
def test_klt_latents_decode_with_rgb16x(photo, method):
    klt, deep = load("rgb-16x-klt"), load("rgb-16x")
    z = klt.encode(photo)
    data = klt.to_bytes(z, method=method, size=(64, 72))
    header = entropy.read_header(data)
    assert header.codec_hash == klt.hash and header.encoder_hash == klt.encoder_hash
    assert data[4] == entropy.VERSION == 2
    z_back = deep.from_bytes(data)
    assert torch.equal(z_back, z) and torch.equal(deep.encode(photo), z)
    x_hat = deep.decode(z_back, size=(64, 72))
    assert x_hat.shape == photo.shape and torch.isfinite(x_hat).all()


def test_another_encoder_is_refused(photo):
    klt = load("rgb-16x-klt")
    other = copy.deepcopy(klt)
    other.frozen_hash = other.frozen_encoder_hash = None
    with torch.no_grad():
        other.encoder.weight[0, 0] += 1e-3
    other.freeze()
    data = klt.to_bytes(klt.encode(photo), method="zstd")
    with pytest.raises(LatentFormatError, match=r"written by codec \w+ \(encoder"):
        other.from_bytes(data)
    with pytest.raises(LatentFormatError, match="written by codec"):
        klt.from_bytes(other.to_bytes(other.encode(photo)))


def test_version_1_headers_still_read(photo):
    """Headers written before encoder hashes (full hash only): the writer itself still reads them;
    another decoder cannot prove it shares the encoder from the full hash, so it is refused."""
    klt, deep = load("rgb-16x-klt"), load("rgb-16x")
    z = klt.encode(photo)
    old = entropy.encode_latents(z, bits=8, codec_hash=klt.hash, method="zstd", size=(64, 72))
    assert old[4] == 1
    assert struct.unpack_from("<Q", old, 9 + 4 * 6 + 32)[0] == len(old) - (9 + 4 * 6 + 48)
    header = entropy.read_header(old)
    assert header.encoder_hash is None and header.codec_hash == klt.hash
    assert torch.equal(klt.from_bytes(old), z)
    with pytest.raises(LatentFormatError, match="written by codec"):
        deep.from_bytes(old)
    # the v2 record of the same latents is the v1 record plus 32 bytes of encoder hash
    new = klt.to_bytes(z, method="zstd", size=(64, 72))
    assert len(new) == len(old) + 32 and new[-100:] == old[-100:]


def test_saved_codec_records_and_verifies_its_encoder_hash(tmp_path):
    codec = build(CodecConfig(kind="1d", channels=2, J=3, latent_dim=4, Nd=8, decoder="linear"))
    path = save(codec, tmp_path / "c")
    description = json.loads(path.read_text())
    assert description["encoder_hash"] == codec.encoder_hash
    assert load_project(path).encoder_hash == codec.encoder_hash
    description["encoder_hash"] = "0" * 64
    path.write_text(json.dumps(description))
    with pytest.raises(CheckpointError, match="encoder hash"):
        load_project(path)
    del description["encoder_hash"]  # a file written before encoder hashes: computed on load
    path.write_text(json.dumps(description))
    assert load_project(path).encoder_hash == codec.encoder_hash


def test_stereo_klt_latents_decode_with_stereo44k():
    klt, deep = load("stereo-44k-klt"), load("stereo-44k")
    assert deep.encoder_hash == klt.encoder_hash and deep.hash != klt.hash
    x = torch.rand(1, 2, 4096, generator=torch.Generator().manual_seed(3)) - 0.5
    z = klt.encode(x)
    assert torch.equal(deep.encode(x), z)  # identical latents: only the decoder differs
    z_back = deep.from_bytes(klt.to_bytes(z, method="zstd", size=(4096,)))
    assert torch.equal(z_back, z)
    x_hat = deep.decode(z_back, size=(4096,))
    assert x_hat.shape == x.shape and torch.isfinite(x_hat).all()
