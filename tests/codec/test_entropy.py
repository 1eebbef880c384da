"""Lossless latent coding: exact round trips, the header, and clear errors on damaged bytes."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.codec import entropy
from pipeline.codec.entropy import (
    METHODS,
    LatentFormatError,
    LatentHeader,
    decode_latents,
    encode_latents,
    mosaic_layout,
    read_header,
)

HASH = "0123456789abcdef" * 4
ALL_BITS = range(2, 9)
SHAPES = [(2, 6, 5, 7), (6, 5, 7), (5, 7, 9), (4, 33), (2, 3, 17), (11,), (1, 1, 1, 1)]


def latents(shape: tuple[int, ...], bits: int, seed: int = 0) -> torch.Tensor:
    """Rounded Gaussian with the bottleneck's spread (std max_int / 1.85), clipped to the range."""
    max_int = 2 ** (bits - 1) - 1
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=g) * (max_int / 1.85)
    return z.round().clamp(-max_int, max_int).to(torch.int8)


def roundtrip(z: torch.Tensor, **kw) -> tuple[torch.Tensor, LatentHeader]:
    kw.setdefault("codec_hash", HASH)
    return decode_latents(encode_latents(z, **kw))


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("bits", ALL_BITS)
def test_roundtrip_exact(method, bits):
    for i, shape in enumerate(SHAPES):
        z = latents(shape, bits, seed=i)
        out, header = roundtrip(z, bits=bits, method=method)
        assert out.dtype == torch.int8 and out.shape == z.shape
        assert torch.equal(out, z), (method, bits, shape)
        assert header == LatentHeader(method=method, bits=bits, shape=shape, codec_hash=HASH, size=None)


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("bits", ALL_BITS)
def test_extremes(method, bits):
    max_int = 2 ** (bits - 1) - 1
    for value in (-max_int, max_int, 0):
        z = torch.full((3, 4, 5), value, dtype=torch.int8)
        assert torch.equal(roundtrip(z, bits=bits, method=method)[0], z)
    z = torch.tensor([-max_int, max_int] * 10, dtype=torch.int8).reshape(2, 2, 5)
    assert torch.equal(roundtrip(z, bits=bits, method=method)[0], z)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_deterministic_and_any_integer_dtype(method):
    z = latents((2, 8, 6, 6), 5)
    data = encode_latents(z, bits=5, codec_hash=HASH, method=method)
    assert data == encode_latents(z.clone(), bits=5, codec_hash=HASH, method=method)
    for dtype in (torch.int16, torch.int32, torch.int64):
        assert encode_latents(z.to(dtype), bits=5, codec_hash=HASH, method=method) == data
    assert torch.equal(decode_latents(data)[0], z)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_empty_tensor(method):
    z = torch.zeros((2, 0, 3), dtype=torch.int8)
    out, header = roundtrip(z, bits=4, method=method)
    assert out.shape == (2, 0, 3) and header.shape == (2, 0, 3)


def test_header_roundtrip_with_size():
    z = latents((1, 12, 8, 9), 6)
    data = encode_latents(z, bits=6, codec_hash=HASH.upper(), method="png", size=(61, 70))
    header = read_header(data)
    assert header == LatentHeader(method="png", bits=6, shape=(1, 12, 8, 9), codec_hash=HASH, size=(61, 70))
    assert decode_latents(data)[1] == header
    # the header alone is enough to read it
    header_len = 9 + 4 * (4 + 2) + 48
    assert read_header(data[:header_len]) == header
    with pytest.raises(LatentFormatError, match="truncated header"):
        read_header(data[: header_len - 1])
    assert read_header(encode_latents(z[0, 0, 0], bits=6, codec_hash=HASH, size=(7,))).size == (7,)


def test_header_layout():
    """Pins the documented byte layout (schemas/latent_bytes.md)."""
    z = torch.tensor([[1, -1, 0]], dtype=torch.int8)
    data = encode_latents(z, bits=2, codec_hash=HASH, method="raw", size=(5,))
    magic, version, method_id, bits, ndim, size_ndim = struct.unpack_from("<4sBBBBB", data)
    assert (magic, version, method_id, bits, ndim, size_ndim) == (b"WLAT", 1, 0, 2, 2, 1)
    assert struct.unpack_from("<3I", data, 9) == (1, 3, 5)
    assert data[21:53] == bytes.fromhex(HASH)
    assert struct.unpack_from("<Q", data, 53) == (3,)
    assert data[69:] == bytes([3, 1, 2])  # z + 2^(bits-1)
    assert len(data) == 9 + 12 + 48 + 3


@pytest.mark.parametrize("bits", range(2, 8))
def test_bit_packing_beats_raw(bits):
    z = latents((4, 16, 16, 16), bits)
    raw = len(encode_latents(z, bits=bits, codec_hash=HASH, method="raw"))
    packed = len(encode_latents(z, bits=bits, codec_hash=HASH, method="zstd"))
    assert packed < raw * (bits + 0.5) / 8


def test_pack_bits_exact():
    rng = np.random.default_rng(0)
    for bits in ALL_BITS:
        for count in (1, 7, 8, 9, 1001):
            u = rng.integers(0, 2**bits, size=count, dtype=np.uint8)
            packed = entropy.pack_bits(u, bits)
            assert len(packed) == (count * bits + 7) // 8
            assert np.array_equal(entropy.unpack_bits(packed, count, bits), u)


def test_mosaic_layout_fits_webp_limit():
    assert mosaic_layout((1, 16, 32, 32), 16383) == entropy.MosaicLayout(16, 32, 32, 32, 1, 4, 4)
    # a long 1-D latent is cut into segments that fit the width limit
    layout = mosaic_layout((2, 40000), 16383)
    assert layout.segments == 3 and layout.seg_w * 3 >= 40000
    assert max(layout.image_size) <= 16383
    # and still round-trips (small limit, so the test stays fast)
    u = np.random.default_rng(1).integers(1, 16, size=(3, 2, 50), dtype=np.uint8)
    small = mosaic_layout(u.shape, 32)
    assert small.segments == 2 and max(small.image_size) <= 32
    mosaic = entropy.to_mosaic(u, small, fill=8)
    assert (mosaic.shape[1], mosaic.shape[0]) == small.image_size
    assert np.array_equal(entropy.from_mosaic(mosaic, small).reshape(u.shape), u)


def test_mosaic_too_large_is_a_clear_error():
    with pytest.raises(LatentFormatError, match="limit of 16383 px"):
        mosaic_layout((1, 20000, 4), 16383)
    with pytest.raises(LatentFormatError, match="do not fit"):
        mosaic_layout((100_000, 64, 64), 16383, "WEBP")


def test_webp_payload_is_a_lossless_image():
    z = latents((1, 4, 8, 8), 8)
    data = encode_latents(z, bits=8, codec_hash=HASH, method="webp")
    payload = data[len(data) - struct.unpack_from("<Q", data, 9 + 16 + 32)[0] :]
    with Image.open(io.BytesIO(payload)) as image:
        assert image.format == "WEBP" and image.size == (16, 16)


# --- errors --------------------------------------------------------------------------------------


@pytest.fixture(params=sorted(METHODS))
def encoded(request) -> bytes:
    return encode_latents(latents((1, 6, 9, 10), 5), bits=5, codec_hash=HASH, method=request.param)


def test_truncated(encoded):
    for cut in (0, 3, 8, 20, 60, len(encoded) // 2, len(encoded) - 1):
        with pytest.raises(LatentFormatError, match="truncated"):
            decode_latents(encoded[:cut])
    with pytest.raises(LatentFormatError, match=f"expected {len(encoded)} bytes, got {len(encoded) - 1}"):
        decode_latents(encoded[:-1])
    with pytest.raises(LatentFormatError, match="trailing"):
        decode_latents(encoded + b"\0")


def test_flipped_payload_byte(encoded):
    payload_start = 9 + 4 * 4 + 48
    for pos in (payload_start, (payload_start + len(encoded)) // 2, len(encoded) - 1):
        damaged = bytearray(encoded)
        damaged[pos] ^= 0x10
        with pytest.raises(LatentFormatError, match="payload checksum mismatch"):
            decode_latents(bytes(damaged))


def test_flipped_header_byte(encoded):
    for pos in (6, 9, 30, 60):
        damaged = bytearray(encoded)
        damaged[pos] ^= 0x01
        with pytest.raises(LatentFormatError, match="header checksum mismatch"):
            decode_latents(bytes(damaged))


def test_bad_magic_and_version(encoded):
    with pytest.raises(LatentFormatError, match="bad magic"):
        decode_latents(b"RIFF" + encoded[4:])
    with pytest.raises(LatentFormatError, match="version 9"):
        read_header(encoded[:4] + b"\x09" + encoded[5:])


def _with_header_field(data: bytes, offset: int, value: int) -> bytes:
    """Rewrite one header byte and fix the header CRC, to reach the checks behind it."""
    ndim, size_ndim = data[7], data[8]
    header_len = 9 + 4 * (ndim + size_ndim) + 48
    head = bytearray(data[:header_len])
    head[offset] = value
    struct.pack_into("<I", head, header_len - 4, zlib.crc32(bytes(head[:-4])))
    return bytes(head) + data[header_len:]


def test_unknown_method():
    z = latents((2, 3), 4)
    with pytest.raises(LatentFormatError, match="unknown method 'brotli'"):
        encode_latents(z, bits=4, codec_hash=HASH, method="brotli")
    data = encode_latents(z, bits=4, codec_hash=HASH, method="raw")
    with pytest.raises(LatentFormatError, match="unknown method id 200"):
        decode_latents(_with_header_field(data, 5, 200))


def test_decoded_values_out_of_range():
    """bits=3 allows +-3, so a raw payload of 4 bits' values must be refused, not returned."""
    z = torch.tensor([7, -7, 0], dtype=torch.int8)
    data = encode_latents(z, bits=4, codec_hash=HASH, method="raw")
    with pytest.raises(LatentFormatError, match="out of range for bits=3"):
        decode_latents(_with_header_field(data, 6, 3))


@pytest.mark.parametrize("bits", ALL_BITS)
def test_out_of_range_values(bits):
    max_int = 2 ** (bits - 1) - 1
    for bad in (max_int + 1, -max_int - 1):
        z = torch.tensor([[0, bad, 1]], dtype=torch.int16)
        lo, hi = min(bad, 0), max(bad, 1)
        with pytest.raises(LatentFormatError, match=rf"\[{-max_int}, {max_int}\].*min {lo}, max {hi}"):
            encode_latents(z, bits=bits, codec_hash=HASH)


def test_bad_inputs():
    z = latents((2, 3), 4)
    with pytest.raises(LatentFormatError, match="integer dtype"):
        encode_latents(z.float(), bits=4, codec_hash=HASH)
    with pytest.raises(LatentFormatError, match="integer dtype"):
        encode_latents(z > 0, bits=4, codec_hash=HASH)
    with pytest.raises(LatentFormatError, match="torch.Tensor"):
        encode_latents(z.numpy(), bits=4, codec_hash=HASH)
    for bits in (1, 9, 0):
        with pytest.raises(LatentFormatError, match="bits must be"):
            encode_latents(z, bits=bits, codec_hash=HASH)
    for digest in ("abc", HASH[:-1] + "g", HASH + "00"):
        with pytest.raises(LatentFormatError, match="64 hex"):
            encode_latents(z, bits=4, codec_hash=digest)
    with pytest.raises(LatentFormatError, match="dims"):
        encode_latents(torch.tensor(1, dtype=torch.int8), bits=4, codec_hash=HASH)
    with pytest.raises(LatentFormatError, match="size"):
        encode_latents(z, bits=4, codec_hash=HASH, size=(-1, 4))
    assert issubclass(LatentFormatError, ValueError)
