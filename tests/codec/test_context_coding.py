"""The `context` latent method: exact on every shape and value range, smaller than the other methods
on real latents, a stable format, and clear errors on damaged payloads."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from pipeline.codec import context_coding, entropy, load
from pipeline.codec.entropy import LatentFormatError, decode_latents, encode_latents
from pipeline.config import DEFAULT_IMAGE_INPUT

HASH = "ab" * 32


def roundtrip(z: torch.Tensor, bits: int) -> torch.Tensor:
    data = encode_latents(z, bits=bits, codec_hash=HASH, method="context")
    assert entropy.read_header(data).method == "context" and data[5] == 4
    return decode_latents(data)[0]


EDGE_SHAPES = [(1, 1, 1), (12, 1, 1), (3, 7, 13), (5, 1, 17), (2, 17, 1), (2, 12, 5, 9), (1, 65, 3)]
EDGE_SHAPES += [(1,), (23,), (4, 1), (2, 300), (108, 10)]  # 1-D: (L,) and (C, L)


@pytest.mark.parametrize("shape", EDGE_SHAPES, ids=str)
@pytest.mark.parametrize("bits", [2, 5, 8])
def test_edge_cases_round_trip(shape, bits):
    max_int = 2 ** (bits - 1) - 1
    rng = np.random.default_rng(len(shape) * 100 + bits)
    cases = {
        "zeros": np.zeros(shape, dtype=np.int8),
        "max": np.full(shape, max_int, dtype=np.int8),
        "min": np.full(shape, -max_int, dtype=np.int8),
        "uniform": rng.integers(-max_int, max_int + 1, size=shape).astype(np.int8),
        "alternating": np.where(np.indices(shape).sum(0) % 2 == 0, max_int, -max_int).astype(np.int8),
        "sparse": (rng.random(shape) < 0.02).astype(np.int8) * max_int,
    }
    for name, z in cases.items():
        out = roundtrip(torch.from_numpy(z), bits)
        assert out.shape == shape and torch.equal(out, torch.from_numpy(z)), name


def test_large_random_and_smooth_latents():
    rng = np.random.default_rng(7)
    i, j = np.meshgrid(np.arange(70), np.arange(45), indexing="ij")
    smooth = np.stack([np.round(100 * np.sin(i / (7 + c)) * np.cos(j / 5)) for c in range(12)])
    smooth = np.clip(smooth + rng.integers(-1, 2, size=smooth.shape), -127, 127).astype(np.int8)
    noise = rng.integers(-127, 128, size=(3, 128, 96)).astype(np.int8)
    bits_per_value = {}
    for name, z in (("smooth", smooth), ("noise", noise)):
        assert torch.equal(roundtrip(torch.from_numpy(z), 8), torch.from_numpy(z))
        u = (z.astype(np.int16) + 128).astype(np.uint8)
        bits_per_value[name] = 8 * len(context_coding.encode_planes(u, 8)) / z.size
    # measured: 3.21 (the +-1 noise alone is 1.58 bits) and 8.06 (uniform noise: 8 bits + 0.7%)
    assert bits_per_value["smooth"] < 3.5 and bits_per_value["noise"] < 8.1, bits_per_value


def test_deterministic_bytes():
    z = torch.from_numpy(np.random.default_rng(3).integers(-40, 41, size=(12, 16, 16)).astype(np.int8))
    a = encode_latents(z, bits=8, codec_hash=HASH, method="context")
    assert a == encode_latents(z.clone(), bits=8, codec_hash=HASH, method="context")


def test_format_is_pinned():
    """The prior table and the payload of a fixed input: a change of model or of constriction's
    quantization shows up here (stored data would not decode: give the model a new version)."""
    prior = context_coding.prior_counts(8)
    assert prior.shape == (16, 509) and prior.min() >= 1
    assert hashlib.sha256(prior.tobytes()).hexdigest()[:16] == PRIOR_SHA
    ramp = (np.arange(2 * 9 * 11).reshape(2, 9, 11) % 37 - 18).astype(np.int16) + 128
    payload = context_coding.encode_planes(ramp.astype(np.uint8), 8)
    assert hashlib.sha256(payload).hexdigest()[:16] == PAYLOAD_SHA


PRIOR_SHA = "d182548c920411b8"
PAYLOAD_SHA = "c470d1fe26810d28"


@pytest.fixture(scope="module")
def sample_latents() -> list[torch.Tensor]:
    """Latents of the bundled sample photos (256 x 256) under the default image codec."""
    codec = load("rgb-16x-klt")
    out = []
    for path in sorted(Path(DEFAULT_IMAGE_INPUT).rglob("*.JPEG"))[:8]:
        with Image.open(path) as image:
            rgb = np.asarray(ImageOps.fit(image.convert("RGB"), (256, 256)), dtype=np.float32)
        x = torch.from_numpy(rgb / 255 - 0.5).permute(2, 0, 1)[None].contiguous()
        out.append(codec.encode(x)[0])
    return out


def test_smallest_on_real_latents(sample_latents):
    sizes = {m: 0 for m in ("context", "webp", "png", "zstd")}
    for z in sample_latents:
        for m in sizes:
            data = encode_latents(z, bits=8, codec_hash=HASH, method=m)
            assert torch.equal(decode_latents(data)[0], z)
            sizes[m] += len(data)
    assert sizes["context"] < 0.95 * min(sizes["webp"], sizes["png"], sizes["zstd"]), sizes


def _split(data: bytes) -> tuple[bytes, bytes]:
    """(header, payload) of a WLAT record (schemas/latent_bytes.md)."""
    n, m = data[7], data[8]
    head = 9 + 4 * (n + m) + (80 if data[4] == 2 else 48)
    return data[:head], data[head:]


def test_damaged_payloads_are_clear_errors():
    u = (np.random.default_rng(5).integers(-30, 31, size=(4, 8, 8)) + 128).astype(np.uint8)
    payload = context_coding.encode_planes(u, 8)
    with pytest.raises(context_coding.ContextCodingError, match="model version"):
        context_coding.decode_planes(b"\x09" + payload[1:], u.shape, 8)
    with pytest.raises(context_coding.ContextCodingError, match="parameter bytes"):
        context_coding.decode_planes(payload[:5], u.shape, 8)
    with pytest.raises(context_coding.ContextCodingError, match="32-bit words"):
        context_coding.decode_planes(payload[:-1], u.shape, 8)
    with pytest.raises(context_coding.ContextCodingError, match="beyond|outside"):
        context_coding.decode_planes(payload + payload[-8:], u.shape, 8)
    with pytest.raises(context_coding.ContextCodingError, match="cannot hold"):
        context_coding.decode_planes(payload[:1] + payload[1:5] * 4 + payload[17:], (4, 50000, 50000), 8)
    # garbage words either fail as a format error or decode to some in-range array; never crash
    rng = np.random.default_rng(0)
    for _ in range(20):
        junk = payload[:17] + rng.integers(0, 256, size=len(payload) - 17, dtype=np.uint8).tobytes()
        try:
            out = context_coding.decode_planes(junk, u.shape, 8)
        except context_coding.ContextCodingError:
            continue
        assert out.shape == u.shape and out.min() >= 1


def test_decode_latents_reports_a_context_error_as_a_format_error():
    z = torch.zeros((2, 4, 4), dtype=torch.int8)
    data = encode_latents(z, bits=8, codec_hash=HASH, method="context")
    head, payload = _split(data)
    bad = bytearray(payload)
    bad[0] = 7
    head = bytearray(head)
    crc_at = len(head) - 8
    struct.pack_into("<I", head, crc_at, zlib.crc32(bytes(bad)))
    struct.pack_into("<I", head, len(head) - 4, zlib.crc32(bytes(head[:-4])))
    with pytest.raises(LatentFormatError, match="model version"):
        decode_latents(bytes(head) + bytes(bad))
