"""Is this file whole? Container-level checks that Pillow does not make, before any pixel is decoded.

Why: Pillow decodes some damaged files without a word. It does not verify the CRCs of PNG pixel
chunks, accepts a PNG without its IEND chunk and a GIF without its trailer, and silences libjpeg's
"Corrupt JPEG data" warnings (a marker inside the entropy-coded data ends the scan early and libjpeg
fills the rest of the image). Each check walks the format's own structure (segment, chunk and
block lengths) and raises DecodeError naming what is wrong; it reads no pixels (a CRC-32 pass over
a PNG, a scan for 0xFF bytes in a JPEG), so it costs a small fraction of the decode.

What a format without checksums cannot tell (documented in docs/guarantees.md): a byte changed
inside JPEG entropy data, WebP (VP8/VP8L), GIF LZW data, uncompressed or LZW TIFF, or BMP pixel data
decodes to a full image with other pixels. Truncation is always detected (here, or by Pillow).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Mapping
from typing import Any

from .errors import DecodeError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# JPEG markers (ITU T.81 table B.1) that may appear as segments; RSTn only inside entropy-coded data
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RST0-7: no length field
_JPEG_SEGMENTS = {
    *range(0xC0, 0xD0),  # SOFn, DHT (C4), JPG (C8), DAC (CC)
    0xDA,  # SOS
    0xDB,  # DQT
    0xDC,  # DNL
    0xDD,  # DRI
    0xDE,  # DHP
    0xDF,  # EXP
    *range(0xE0, 0xF0),  # APPn
    *range(0xF0, 0xFF),  # JPGn extensions, COM (FE)
}
_JPEG_AFTER_SCAN = {0xC4, 0xCC, 0xD9, 0xDA, 0xDB, 0xDC, 0xDD, *range(0xE0, 0xF0), 0xFE}


def check_integrity(data: bytes) -> str | None:
    """Raise DecodeError if `data` is a truncated or structurally damaged file of a format checked
    here (JPEG, PNG, GIF, WebP, WAV); return the format's name, or None for formats left to the
    decoder (Pillow, libsndfile, tifffile)."""
    for name, matches, check in _CHECKS:
        if matches(data):
            check(data)
            return name
    return None


def check_jpeg(data: bytes) -> None:
    """Segments whole, only stuffed bytes / RSTn in sequence inside scans, an EOI marker at the end.

    Bytes after EOI are allowed (cameras and phones append trailers)."""
    n, pos, scans = len(data), 2, 0
    while True:
        if pos >= n:
            raise DecodeError("truncated JPEG: the file ends before its end-of-image marker")
        if data[pos] != 0xFF:
            raise DecodeError(f"corrupt JPEG: byte {pos} should start a marker, found 0x{data[pos]:02X}")
        while pos + 1 < n and data[pos + 1] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos + 1 >= n:
            raise DecodeError("truncated JPEG: the file ends before its end-of-image marker")
        marker = data[pos + 1]
        if marker == 0xD9:
            if not scans:
                raise DecodeError("corrupt JPEG: end-of-image marker before any scan")
            trailer = data[pos + 2 :].rstrip(b"\x00")
            if trailer.endswith(b"\xff\xd9") and b"\xff\xd8" not in trailer:
                # the rest of a scan and the real EOI: a damaged byte became an EOI marker, and libjpeg
                # would fill the image from there on (a trailer, or an MPO's next image, has an SOI)
                raise DecodeError(
                    f"corrupt JPEG: an end-of-image marker at byte {pos} ends the scan early "
                    f"(the file's last is at byte {pos + 2 + len(trailer) - 2})"
                )
            return
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker not in _JPEG_SEGMENTS or (scans and marker not in _JPEG_AFTER_SCAN):
            raise DecodeError(f"corrupt JPEG: unexpected marker 0xFF{marker:02X} at byte {pos}")
        if pos + 4 > n:
            raise DecodeError(f"truncated JPEG: the file ends inside marker 0xFF{marker:02X}")
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2:
            raise DecodeError(f"corrupt JPEG: segment 0xFF{marker:02X} at byte {pos} has length {length}")
        end = pos + 2 + length
        if end > n:
            raise DecodeError(
                f"truncated JPEG: segment 0xFF{marker:02X} at byte {pos} needs {length} bytes, "
                f"the file has {n - pos - 2}"
            )
        pos = end
        if marker == 0xDA:
            scans += 1
            pos = _skip_entropy_data(data, pos)


def _skip_entropy_data(data: bytes, pos: int) -> int:
    """Position of the marker that ends the entropy-coded data starting at pos."""
    n, restart = len(data), 0
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= n:
            raise DecodeError("truncated JPEG: the file ends inside the entropy-coded data")
        nxt = data[pos + 1]
        if nxt == 0x00:  # a stuffed 0xFF data byte
            pos += 2
        elif 0xD0 <= nxt <= 0xD7:
            if nxt - 0xD0 != restart:
                raise DecodeError(
                    f"corrupt JPEG: restart marker RST{nxt - 0xD0} at byte {pos}, expected RST{restart}"
                )
            restart = (restart + 1) % 8
            pos += 2
        elif nxt == 0xFF:  # fill bytes: the marker follows
            pos += 1
        else:
            return pos


def check_png(data: bytes) -> None:
    """Every chunk whole with a matching CRC-32, up to IEND."""
    n, pos = len(data), len(PNG_SIGNATURE)
    while True:
        if pos + 8 > n:
            raise DecodeError("truncated PNG: the file ends before its IEND chunk")
        length, ctype = struct.unpack_from(">I4s", data, pos)
        if not ctype.isalpha():
            raise DecodeError(f"corrupt PNG: chunk type {ctype!r} at byte {pos} is not a chunk name")
        end = pos + 12 + length
        if end > n:
            raise DecodeError(
                f"truncated PNG: chunk {ctype.decode()} at byte {pos} runs past the end of the file "
                f"({length + 12} bytes, {n - pos} left)"
            )
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(memoryview(data)[pos + 4 : end - 4]) != crc:
            raise DecodeError(f"corrupt PNG: CRC mismatch in chunk {ctype.decode()} at byte {pos}")
        if ctype == b"IEND":
            return
        pos = end


def check_gif(data: bytes) -> None:
    """Header, colour tables, extension and image blocks (their sub-blocks) whole, then the trailer."""
    n = len(data)
    if n < 13:
        raise DecodeError("truncated GIF: the file ends inside its header")
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while True:
        if pos >= n:
            raise DecodeError("truncated GIF: the file ends before its trailer (0x3B)")
        block = data[pos]
        if block == 0x3B:
            return
        if block == 0x21:  # extension: label, then sub-blocks
            pos = _skip_sub_blocks(data, pos + 2)
        elif block == 0x2C:  # image descriptor (10 bytes), local colour table, LZW code size, data
            if pos + 10 > n:
                raise DecodeError("truncated GIF: the file ends inside an image descriptor")
            flags = data[pos + 9]
            pos += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
            pos = _skip_sub_blocks(data, pos + 1)
        else:
            raise DecodeError(f"corrupt GIF: unknown block 0x{block:02X} at byte {pos}")


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    n = len(data)
    while True:
        if pos >= n:
            raise DecodeError("truncated GIF: the file ends inside a data block")
        size = data[pos]
        pos += 1 + size
        if size == 0:
            return pos


def check_wav(data: bytes) -> None:
    """The RIFF size and the data chunk within the file (libsndfile reads a cut WAV as a shorter one).

    Sizes 0 and 0xFFFFFFFF mean "unknown" (a WAV written as a stream): nothing to check against."""
    (size,) = struct.unpack_from("<I", data, 4)
    if size not in (0, 0xFFFFFFFF) and 8 + size > len(data):
        raise DecodeError(f"truncated WAV: the RIFF header says {8 + size} bytes, the file has {len(data)}")
    pos = 12
    while pos + 8 <= len(data):
        fourcc, csize = struct.unpack_from("<4sI", data, pos)
        if fourcc == b"data":
            if csize not in (0, 0xFFFFFFFF) and pos + 8 + csize > len(data):
                raise DecodeError(
                    f"truncated WAV: its data chunk says {csize} bytes, the file has {len(data) - pos - 8}"
                )
            return
        pos += 8 + csize + (csize & 1)


def check_webp(data: bytes) -> None:
    """The RIFF size and every chunk within it."""
    (size,) = struct.unpack_from("<I", data, 4)
    end = 8 + size
    if end > len(data):
        raise DecodeError(f"truncated WebP: the RIFF header says {end} bytes, the file has {len(data)}")
    pos = 12
    while pos < end:
        if pos + 8 > end:
            raise DecodeError(f"corrupt WebP: a chunk header at byte {pos} runs past the RIFF data")
        fourcc, csize = struct.unpack_from("<4sI", data, pos)
        if pos + 8 + csize > end:
            raise DecodeError(f"corrupt WebP: chunk {fourcc!r} at byte {pos} runs past the RIFF data")
        pos += 8 + csize + (csize & 1)


TIFF_STRIPS = ((273, 279), (324, 325))  # (StripOffsets, StripByteCounts), (TileOffsets, TileByteCounts)


def check_tiff_extents(tags: Mapping[int, Any], size: int) -> None:
    """Every strip or tile of a TIFF image (its tags: Pillow's `tag_v2`, or a dict) inside the file.

    A TIFF's image data may come before its directory, so a cut file can still open; its last strip
    is then short, and an LZW decoder returns what it got without an error."""
    for offsets_tag, counts_tag in TIFF_STRIPS:
        offsets, counts = tags.get(offsets_tag), tags.get(counts_tag)
        if offsets is None or counts is None:
            continue
        offsets = (offsets,) if isinstance(offsets, int) else tuple(offsets)
        counts = (counts,) if isinstance(counts, int) else tuple(counts)
        for i, (offset, count) in enumerate(zip(offsets, counts, strict=False)):
            if offset + count > size:
                kind = "strip" if offsets_tag == 273 else "tile"
                raise DecodeError(
                    f"truncated TIFF: {kind} {i} ends at byte {offset + count}, the file has {size}"
                )


_CHECKS: tuple[tuple[str, Callable[[bytes], bool], Callable[[bytes], None]], ...] = (
    ("JPEG", lambda d: d[:3] == b"\xff\xd8\xff", check_jpeg),
    ("PNG", lambda d: d[:8] == PNG_SIGNATURE, check_png),
    ("GIF", lambda d: d[:6] in (b"GIF87a", b"GIF89a"), check_gif),
    ("WEBP", lambda d: len(d) >= 12 and d[:4] == b"RIFF" and d[8:12] == b"WEBP", check_webp),
    ("WAV", lambda d: len(d) >= 12 and d[:4] == b"RIFF" and d[8:12] == b"WAVE", check_wav),
)
