"""Lossless entropy coding of quantized latents, for storage: a small binary header plus a payload.

Latents are integers in +-(2^(bits-1) - 1) (see bottleneck.py). Companding makes their histogram
close to uniform, so "zstd" gets most of its gain from spending `bits` bits per value instead of a
byte, and it is the fast default. PNG / WebP mosaics follow the reference walloc, which stores
latents as lossless images: their spatial predictors can win where latents are spatially
correlated, at a higher encode cost, and image tools can open them.

Byte layout (little-endian; the spec of record is schemas/latent_bytes.md):

    offset  size        field
    0       4           magic b"WLAT"
    4       1           format version: 2 (1: written before encoder hashes, still read)
    5       1           method id: 0 raw, 1 zstd, 2 png, 3 webp, 4 context
    6       1           latent bits (2..8)
    7       1           ndim n (1..255)
    8       1           size ndim m (0: no size recorded)
    9       4n          shape, uint32 each
    9+4n    4m          original signal size before padding, uint32 each
    ..      32          codec hash (sha256, raw bytes)
    ..      32          version 2 only: encoder hash (sha256, raw bytes; hashing.encoder_hash)
    ..      8           payload length in bytes, uint64
    ..      4           CRC32 of the payload
    ..      4           CRC32 of every header byte before this field
    ..      (length)    payload

Every method stores u = z + 2^(bits-1) (so 1..2^bits - 1) in C order: leading dims (batch,
channel) first, so each (h, w) or (C, L) plane is contiguous. An empty tensor has an empty payload.

    raw   one uint8 per value.
    zstd  values bit-packed to `bits` bits (LSB first, numpy bitorder="little") when bits < 8,
          then one zstd frame (level 9, content size recorded, no threads: deterministic).
    png   the planes, i.e. the last two dims (a 1-D tensor is one row), tiled into one grayscale
    webp  8-bit mosaic; planes wider than the format allows are cut into equal-width segments;
          unused tiles hold latent 0. The layout is a pure function of (shape, format limit), so
          the decoder recomputes it. WebP is lossless, quality 100, method 4
          (method 6 is ~1-2% smaller and ~100x slower).
    context a context-adaptive model (neighbour prediction, activity classes, adaptive
          histograms) driving constriction's rANS coder: the smallest; context_coding.py.
"""

from __future__ import annotations

import io
import math
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import zstandard
from PIL import Image
from torch import Tensor

from . import context_coding

MAGIC = b"WLAT"
VERSION = 2  # written when the encoder hash is given (codec.to_bytes always gives it)
VERSION_CODEC_HASH_ONLY = 1  # no encoder hash: written when none is given, read as ever
MIN_BITS, MAX_BITS = 2, 8
ZSTD_LEVEL = 9
WEBP_MAX_SIDE = 16383  # libwebp's limit on either side
PNG_MAX_SIDE = 65535  # not a PNG limit; keeps mosaics to a size every decoder handles

_FIXED = struct.Struct("<4sBBBBB")  # magic, version, method id, bits, ndim, size ndim
_TRAILERS = {  # per version: codec hash[, encoder hash], payload length, payload crc, header crc
    VERSION_CODEC_HASH_ONLY: struct.Struct("<32sQII"),
    VERSION: struct.Struct("<32s32sQII"),
}
_HASH_RE = re.compile(r"[0-9a-fA-F]{64}")
_UINT32_MAX = 2**32 - 1


class LatentFormatError(ValueError):
    """Latent bytes (or latents to be encoded) that do not follow the format."""


@dataclass(frozen=True)
class LatentHeader:
    """What a latent file records besides the values themselves."""

    method: str
    bits: int
    shape: tuple[int, ...]
    codec_hash: str  # 64 lowercase hex chars (sha256)
    size: tuple[int, ...] | None = None  # signal size before padding, e.g. (H, W) or (L,)
    # sha256 of the writer's encoder side (hashing.encoder_hash); None in version-1 headers
    encoder_hash: str | None = None


# --- methods -------------------------------------------------------------------------------------


class LatentMethod:
    """One payload coding. Works on the unsigned values u = z + 2^(bits-1), as uint8 of any shape."""

    name: str = ""
    id: int = -1

    def encode(self, u: np.ndarray, bits: int) -> bytes:
        raise NotImplementedError

    def decode(self, payload: bytes, shape: tuple[int, ...], bits: int) -> np.ndarray:
        raise NotImplementedError


METHODS: dict[str, LatentMethod] = {}
_METHODS_BY_ID: dict[int, LatentMethod] = {}


def register_method(name: str, method_id: int) -> Callable[[type[LatentMethod]], type[LatentMethod]]:
    """Class decorator: add a method to the registry under a name and a one-byte id (both unique)."""

    def wrap(cls: type[LatentMethod]) -> type[LatentMethod]:
        if name in METHODS or method_id in _METHODS_BY_ID or not 0 <= method_id <= 255:
            raise ValueError(f"method {name!r} / id {method_id} is taken or invalid")
        method = cls()
        method.name, method.id = name, method_id
        METHODS[name] = method
        _METHODS_BY_ID[method_id] = method
        return cls

    return wrap


def _expect_length(what: str, expected: int, got: int) -> None:
    if expected != got:
        raise LatentFormatError(f"{what}: expected {expected} bytes, got {got}")


@register_method("raw", 0)
class RawMethod(LatentMethod):
    """One byte per value, no compression: the baseline and the simplest thing to read elsewhere."""

    def encode(self, u: np.ndarray, bits: int) -> bytes:
        return u.tobytes()

    def decode(self, payload: bytes, shape: tuple[int, ...], bits: int) -> np.ndarray:
        _expect_length("raw payload", math.prod(shape), len(payload))
        return np.frombuffer(payload, dtype=np.uint8).reshape(shape)


def pack_bits(u: np.ndarray, bits: int) -> bytes:
    """The low `bits` bits of each value, concatenated LSB first; the last byte is zero-padded."""
    flat = u.reshape(-1)
    if bits == 8:
        return flat.tobytes()
    planes = np.unpackbits(flat[:, None], axis=1, bitorder="little")[:, :bits]
    return np.packbits(planes.reshape(-1), bitorder="little").tobytes()


def unpack_bits(data: bytes, count: int, bits: int) -> np.ndarray:
    """Inverse of pack_bits: `count` uint8 values."""
    _expect_length("bit-packed latents", (count * bits + 7) // 8, len(data))
    packed = np.frombuffer(data, dtype=np.uint8)
    if bits == 8:
        return packed.copy()
    planes = np.unpackbits(packed, count=count * bits, bitorder="little").reshape(count, bits)
    planes = np.pad(planes, ((0, 0), (0, 8 - bits)))
    return np.packbits(planes, axis=1, bitorder="little").reshape(count)


@register_method("zstd", 1)
class ZstdMethod(LatentMethod):
    """Bit packing, then zstd: the smallest and fastest general choice."""

    def encode(self, u: np.ndarray, bits: int) -> bytes:
        compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True, threads=0)
        return compressor.compress(pack_bits(u, bits))

    def decode(self, payload: bytes, shape: tuple[int, ...], bits: int) -> np.ndarray:
        count = math.prod(shape)
        expected = (count * bits + 7) // 8
        try:
            content_size = zstandard.frame_content_size(payload)
        except zstandard.ZstdError as e:
            raise LatentFormatError(f"zstd payload is not a zstd frame: {e}") from e
        # checked before decompressing, so a forged header cannot make us allocate without bound
        _expect_length("zstd frame content", expected, content_size)
        try:
            packed = zstandard.ZstdDecompressor().decompress(payload, max_output_size=expected)
        except zstandard.ZstdError as e:
            raise LatentFormatError(f"zstd payload does not decompress: {e}") from e
        return unpack_bits(packed, count, bits).reshape(shape)


@dataclass(frozen=True)
class MosaicLayout:
    """How planes of (h, w) become one image: each cut into `segments` pieces of width seg_w,
    the resulting tiles placed row by row on a rows x cols grid."""

    planes: int
    h: int
    w: int
    seg_w: int
    segments: int
    rows: int
    cols: int

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height), as PIL reports it."""
        return self.cols * self.seg_w, self.rows * self.h


def mosaic_layout(shape: tuple[int, ...], max_side: int, fmt: str = "image") -> MosaicLayout:
    """The tiling for a latent shape: the smallest image within max_side, then the squarest one."""
    h, w = (1, shape[0]) if len(shape) == 1 else (shape[-2], shape[-1])
    planes = math.prod(shape[:-2]) if len(shape) > 2 else 1
    if h > max_side:
        raise LatentFormatError(
            f"latent planes of {h} rows exceed the {fmt} limit of {max_side} px; use method 'zstd'"
        )
    segments = -(-w // max_side)
    seg_w = -(-w // segments)
    tiles = planes * segments
    best: tuple[tuple[int, int, int], int, int] | None = None
    for cols in range(1, min(tiles, max_side // seg_w) + 1):
        rows = -(-tiles // cols)
        if rows * h > max_side:
            continue
        width, height = cols * seg_w, rows * h
        key = (width * height, max(width, height), cols)
        if best is None or key < best[0]:
            best = (key, rows, cols)
    if best is None:
        raise LatentFormatError(
            f"{planes} latent planes of {h}x{w} do not fit in one {max_side}x{max_side} {fmt} mosaic; "
            "use method 'zstd' or store fewer samples per record"
        )
    return MosaicLayout(planes, h, w, seg_w, segments, best[1], best[2])


def to_mosaic(u: np.ndarray, layout: MosaicLayout, fill: int) -> np.ndarray:
    """(…, h, w) uint8 -> (rows*h, cols*seg_w) uint8 image, per `layout`."""
    L = layout
    planes = u.reshape(L.planes, L.h, L.w)
    planes = np.pad(planes, ((0, 0), (0, 0), (0, L.segments * L.seg_w - L.w)), constant_values=fill)
    tiles = planes.reshape(L.planes, L.h, L.segments, L.seg_w).transpose(0, 2, 1, 3)
    tiles = tiles.reshape(L.planes * L.segments, L.h, L.seg_w)
    tiles = np.pad(tiles, ((0, L.rows * L.cols - len(tiles)), (0, 0), (0, 0)), constant_values=fill)
    grid = tiles.reshape(L.rows, L.cols, L.h, L.seg_w).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(grid.reshape(L.rows * L.h, L.cols * L.seg_w))


def from_mosaic(image: np.ndarray, layout: MosaicLayout) -> np.ndarray:
    """Inverse of to_mosaic: (planes, h, w) uint8."""
    L = layout
    grid = image.reshape(L.rows, L.h, L.cols, L.seg_w).transpose(0, 2, 1, 3)
    tiles = grid.reshape(L.rows * L.cols, L.h, L.seg_w)[: L.planes * L.segments]
    planes = tiles.reshape(L.planes, L.segments, L.h, L.seg_w).transpose(0, 2, 1, 3)
    return planes.reshape(L.planes, L.h, L.segments * L.seg_w)[:, :, : L.w]


class ImageMethod(LatentMethod):
    """A lossless grayscale mosaic, encoded by PIL."""

    fmt = ""
    max_side = 0
    save_options: dict = {}

    def encode(self, u: np.ndarray, bits: int) -> bytes:
        layout = mosaic_layout(u.shape, self.max_side, self.fmt)
        image = Image.fromarray(to_mosaic(u, layout, fill=2 ** (bits - 1)))
        buf = io.BytesIO()
        image.save(buf, format=self.fmt, **self.save_options)
        return buf.getvalue()

    def decode(self, payload: bytes, shape: tuple[int, ...], bits: int) -> np.ndarray:
        layout = mosaic_layout(shape, self.max_side, self.fmt)
        try:
            with Image.open(io.BytesIO(payload), formats=[self.fmt]) as image:
                if image.size != layout.image_size:
                    raise LatentFormatError(
                        f"{self.fmt} mosaic is {image.size[0]}x{image.size[1]}, "
                        f"expected {layout.image_size[0]}x{layout.image_size[1]} for shape {shape}"
                    )
                image.load()
                # lossless WebP decodes gray as R = G = B; take one channel rather than convert
                pixels = np.asarray(image.getchannel(0) if image.mode != "L" else image, dtype=np.uint8)
        except LatentFormatError:
            raise
        except Exception as e:  # PIL raises many types for a damaged image
            raise LatentFormatError(f"{self.fmt} payload does not decode: {e}") from e
        return from_mosaic(pixels, layout).reshape(shape)


@register_method("png", 2)
class PngMethod(ImageMethod):
    fmt = "PNG"
    max_side = PNG_MAX_SIDE
    save_options = {"compress_level": 9, "optimize": False}


@register_method("webp", 3)
class WebpMethod(ImageMethod):
    fmt = "WEBP"
    max_side = WEBP_MAX_SIDE
    save_options = {"lossless": True, "quality": 100, "method": 4, "exact": True}


@register_method("context", 4)
class ContextMethod(LatentMethod):
    """Interpolation-order prediction + activity contexts + adaptive histograms, rANS coded
    (context_coding.py): the smallest method on real latents; a numpy pass per lattice step."""

    def encode(self, u: np.ndarray, bits: int) -> bytes:
        return context_coding.encode_planes(u, bits)

    def decode(self, payload: bytes, shape: tuple[int, ...], bits: int) -> np.ndarray:
        try:
            return context_coding.decode_planes(payload, shape, bits)
        except context_coding.ContextCodingError as e:
            raise LatentFormatError(str(e)) from e


# --- header --------------------------------------------------------------------------------------


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise LatentFormatError(f"bits must be an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")


def _check_dims(what: str, dims: tuple[int, ...], min_ndim: int) -> tuple[int, ...]:
    dims = tuple(int(d) for d in dims)
    if not min_ndim <= len(dims) <= 255:
        raise LatentFormatError(f"{what} must have {min_ndim} to 255 dims, got {len(dims)}")
    if any(not 0 <= d <= _UINT32_MAX for d in dims):
        raise LatentFormatError(f"{what} {dims} has a dim outside [0, 2^32 - 1]")
    return dims


def _method(name: str) -> LatentMethod:
    if name not in METHODS:
        raise LatentFormatError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def _pack_header(header: LatentHeader, payload: bytes) -> bytes:
    size = header.size or ()
    version = VERSION_CODEC_HASH_ONLY if header.encoder_hash is None else VERSION
    head = _FIXED.pack(MAGIC, version, METHODS[header.method].id, header.bits, len(header.shape), len(size))
    head += struct.pack(f"<{len(header.shape)}I{len(size)}I", *header.shape, *size)
    head += bytes.fromhex(header.codec_hash)
    if header.encoder_hash is not None:
        head += bytes.fromhex(header.encoder_hash)
    head += struct.pack("<QI", len(payload), zlib.crc32(payload))
    return head + struct.pack("<I", zlib.crc32(head))


def _parse_header(data: bytes) -> tuple[LatentHeader, int, int, int]:
    """(header, offset of the payload, payload length, payload CRC32); needs only the header bytes."""
    data = memoryview(data).cast("B")
    if len(data) < _FIXED.size:
        raise LatentFormatError(f"truncated header: expected at least {_FIXED.size} bytes, got {len(data)}")
    magic, version, method_id, bits, ndim, size_ndim = _FIXED.unpack_from(data)
    if magic != MAGIC:
        raise LatentFormatError(f"bad magic {bytes(magic)!r}: not WaLLoC latents (expected {MAGIC!r})")
    if version not in _TRAILERS:
        raise LatentFormatError(
            f"unsupported format version {version} (this reader knows {', '.join(map(str, _TRAILERS))})"
        )
    trailer = _TRAILERS[version]
    header_len = _FIXED.size + 4 * (ndim + size_ndim) + trailer.size
    if len(data) < header_len:
        raise LatentFormatError(f"truncated header: expected {header_len} bytes, got {len(data)}")
    header_crc = struct.unpack_from("<I", data, header_len - 4)[0]
    if zlib.crc32(data[: header_len - 4]) != header_crc:
        raise LatentFormatError("header checksum mismatch: the header is corrupt")
    if method_id not in _METHODS_BY_ID:
        raise LatentFormatError(f"unknown method id {method_id}; known: {sorted(_METHODS_BY_ID)}")
    _check_bits(bits)
    if ndim == 0:
        raise LatentFormatError("header records a 0-dim shape")
    dims = struct.unpack_from(f"<{ndim + size_ndim}I", data, _FIXED.size)
    fields = trailer.unpack_from(data, header_len - trailer.size)
    digest, payload_len, payload_crc = fields[0], fields[-3], fields[-2]
    header = LatentHeader(
        method=_METHODS_BY_ID[method_id].name,
        bits=bits,
        shape=tuple(dims[:ndim]),
        codec_hash=digest.hex(),
        size=tuple(dims[ndim:]) if size_ndim else None,
        encoder_hash=fields[1].hex() if version == VERSION else None,
    )
    return header, header_len, payload_len, payload_crc


def read_header(data: bytes) -> LatentHeader:
    """The header alone (verified by its own CRC); `data` may stop anywhere after the header."""
    return _parse_header(data)[0]


# --- public API ----------------------------------------------------------------------------------


def encode_latents(
    z: Tensor,
    *,
    bits: int,
    codec_hash: str,
    method: str = "zstd",
    size: tuple[int, ...] | None = None,
    encoder_hash: str | None = None,
) -> bytes:
    """Integer latents -> header + payload. Deterministic: the same input gives the same bytes.
    With an encoder hash the header is version 2, without one version 1 (as written before)."""
    coder = _method(method)
    _check_bits(bits)
    for what, digest in (("codec_hash", codec_hash), ("encoder_hash", encoder_hash)):
        if digest is None and what == "encoder_hash":
            continue
        if not isinstance(digest, str) or not _HASH_RE.fullmatch(digest):
            raise LatentFormatError(f"{what} must be 64 hex chars (sha256), got {digest!r}")
    if not isinstance(z, Tensor):
        raise LatentFormatError(f"latents must be a torch.Tensor, got {type(z).__name__}")
    if z.dtype.is_floating_point or z.dtype.is_complex or z.dtype == torch.bool:
        raise LatentFormatError(f"latents must have an integer dtype, got {z.dtype} (round them first)")
    shape = _check_dims("latent shape", tuple(z.shape), 1)
    size = None if size is None else _check_dims("size", tuple(size), 1)
    max_int = 2 ** (bits - 1) - 1
    values = z.detach().cpu().numpy()  # numpy: torch lacks min/max for some unsigned dtypes
    payload = b""
    if values.size:
        lo, hi = int(values.min()), int(values.max())
        if lo < -max_int or hi > max_int:
            raise LatentFormatError(
                f"latent values must be in [{-max_int}, {max_int}] for bits={bits}, got min {lo}, max {hi}"
            )
        u = np.ascontiguousarray(values.astype(np.int16) + (max_int + 1), dtype=np.uint8)
        payload = coder.encode(u, bits)
    header = LatentHeader(
        method=method,
        bits=bits,
        shape=shape,
        codec_hash=codec_hash.lower(),
        size=size,
        encoder_hash=None if encoder_hash is None else encoder_hash.lower(),
    )
    return _pack_header(header, payload) + payload


def decode_latents(data: bytes) -> tuple[Tensor, LatentHeader]:
    """Header + payload -> (int8 latents of the recorded shape, header); checks length, CRCs, range."""
    header, offset, payload_len, payload_crc = _parse_header(data)
    expected = offset + payload_len
    if len(data) < expected:
        raise LatentFormatError(f"truncated latents: expected {expected} bytes, got {len(data)}")
    if len(data) > expected:
        raise LatentFormatError(f"{len(data) - expected} trailing bytes after the payload ({expected} bytes)")
    payload = bytes(memoryview(data)[offset:])
    if zlib.crc32(payload) != payload_crc:
        raise LatentFormatError("payload checksum mismatch: the latents are corrupt")
    if math.prod(header.shape) == 0:
        _expect_length("payload of an empty tensor", 0, payload_len)
        return torch.zeros(header.shape, dtype=torch.int8), header
    u = METHODS[header.method].decode(payload, header.shape, header.bits)
    max_int = 2 ** (header.bits - 1) - 1
    lo, hi = int(u.min()), int(u.max())
    if lo < 1 or hi > 2 * max_int + 1:
        raise LatentFormatError(
            f"decoded values out of range for bits={header.bits}: "
            f"min {lo - max_int - 1}, max {hi - max_int - 1}"
        )
    z = torch.from_numpy(u.astype(np.int16) - (max_int + 1)).to(torch.int8)
    return z.reshape(header.shape), header
