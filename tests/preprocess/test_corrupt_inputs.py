"""Corrupt inputs (issue 16): a generated corpus of damaged files, each either a whole image or a
DecodeError with a specific reason; never a partially decoded (grey-padded) image.

The corpus is made from a bundled photo in every format Pillow writes that an image folder holds
(JPEG baseline / progressive / with restart markers, PNG, WebP lossy / lossless, TIFF raw / LZW /
deflate, GIF, BMP). Damage: truncation at 10%, 50%, 90%, len-2 and len-1, and bytes changed inside
the compressed data (never the header). What each format can and cannot detect: docs/guarantees.md.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from pipeline.preprocess.image import DecodeError, ImagePolicy, decode_image
from pipeline.preprocess.image_device import Probe, probe_jpeg
from pipeline.preprocess.raster import decode_raster

PHOTO = Path(__file__).resolve().parents[2] / "pipeline/samples/images/train/n00000004/n00000004_3.JPEG"
POLICY = ImagePolicy(size=None)  # decode at the stored size: nothing hides a damaged region
TRUNCATIONS = (0.1, 0.5, 0.9, -2, -1)  # fractions of the length, or bytes cut from the end
FLIP_AT = (0.2, 0.35, 0.5, 0.65, 0.8)  # positions within the compressed data
FLIP_MASKS = (0x01, 0x5A, 0xFF)


def _photo() -> Image.Image:
    return Image.open(PHOTO).convert("RGB").resize((128, 96))


def _save(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


# --- where each format keeps its compressed data (found here independently of pipeline code) ---
def _jpeg_scan(data: bytes) -> tuple[int, int]:
    sos = data.index(b"\xff\xda")
    (length,) = struct.unpack_from(">H", data, sos + 2)
    return sos + 2 + length, data.rindex(b"\xff\xd9")


def _png_idat(data: bytes) -> tuple[int, int]:
    i = data.index(b"IDAT")
    (length,) = struct.unpack_from(">I", data, i - 4)
    return i + 4, i + 4 + length


def _webp_payload(data: bytes) -> tuple[int, int]:
    i = next(data.index(c) for c in (b"VP8 ", b"VP8L") if c in data)
    (length,) = struct.unpack_from("<I", data, i + 4)
    return i + 8 + 10, i + 8 + length  # past VP8's frame header / VP8L's signature and size


def _tiff_strips(data: bytes) -> tuple[int, int]:
    img = Image.open(io.BytesIO(data))
    offsets, counts = img.tag_v2[273], img.tag_v2[279]
    return offsets[0], offsets[-1] + counts[-1]


def _gif_lzw(data: bytes) -> tuple[int, int]:
    i = data.index(b"\x2c", 13 + 768)  # image descriptor after the global colour table
    return i + 11, len(data) - 2  # past descriptor and LZW code size; before terminator, trailer


def _bmp_pixels(data: bytes) -> tuple[int, int]:
    (offset,) = struct.unpack_from("<I", data, 10)
    return offset, len(data)


def _pnm_pixels(data: bytes) -> tuple[int, int]:
    channels = 3 if data[:2] == b"P6" else 1
    return len(data) - 128 * 96 * channels, len(data)  # raw 8-bit samples after the text header


def _corpus() -> dict[str, tuple[bytes, tuple[int, int]]]:
    photo = _photo()
    files = {
        "jpeg": _save(photo, "JPEG", quality=90),
        "jpeg-progressive": _save(photo, "JPEG", quality=90, progressive=True),
        "jpeg-restart": _save(photo, "JPEG", quality=90, restart_marker_blocks=4),
        "png": _save(photo, "PNG"),
        "webp": _save(photo, "WEBP", quality=80),
        "webp-lossless": _save(photo, "WEBP", lossless=True),
        "tiff": _save(photo, "TIFF"),
        "tiff-lzw": _save(photo, "TIFF", compression="tiff_lzw"),
        "tiff-deflate": _save(photo, "TIFF", compression="tiff_adobe_deflate"),
        "gif": _save(photo, "GIF"),
        "bmp": _save(photo, "BMP"),
        "ppm": _save(photo, "PPM"),  # ImageFolder's .ppm / .pgm (torchvision's IMG_EXTENSIONS)
        "pgm": _save(photo.convert("L"), "PPM"),
    }
    region = {
        "jpeg": _jpeg_scan,
        "png": _png_idat,
        "webp": _webp_payload,
        "tiff": _tiff_strips,
        "gif": _gif_lzw,
        "bmp": _bmp_pixels,
        "ppm": _pnm_pixels,
        "pgm": _pnm_pixels,
    }
    return {name: (data, region[name.split("-")[0]](data)) for name, data in files.items()}


CORPUS = _corpus()
CLEAN = {name: decode_image(data, POLICY) for name, (data, _) in CORPUS.items()}
FORMAT_NAME = re.compile(r"JPEG|PNG|WEBP|TIFF|GIF|BMP|PPM", re.IGNORECASE)


def _reason(data: bytes) -> str:
    with pytest.raises(DecodeError) as err:
        decode_image(data, POLICY)
    return str(err.value)


def _flipped(name: str) -> list[tuple[int, int, bytes]]:
    data, (start, stop) = CORPUS[name]
    out = []
    for at in FLIP_AT:
        pos = start + int((stop - start) * at)
        for mask in FLIP_MASKS:
            damaged = bytearray(data)
            damaged[pos] ^= mask
            out.append((pos, mask, bytes(damaged)))
    return out


def test_the_clean_corpus_decodes_whole():
    for name, decoded in CLEAN.items():
        assert decoded.array.shape == (3, 96, 128), name  # grey is replicated to the codec's 3
        assert decoded.meta["original_size"] == [128, 96], name


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_truncated_files_always_raise_naming_the_format(name):
    data, _ = CORPUS[name]
    for cut in TRUNCATIONS:
        end = len(data) + cut if cut < 0 else int(len(data) * cut)
        reason = _reason(data[:end])
        assert re.search(r"truncat|corrupt", reason) and FORMAT_NAME.search(reason), (name, end, reason)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_changed_bytes_give_a_whole_image_or_a_specific_error(name):
    """Formats without checksums may decode a changed byte to other pixels (a whole image, as a
    clean decoder gives it); what they must never do is yield a partial one or fail vaguely."""
    for pos, mask, damaged in _flipped(name):
        try:
            decoded = decode_image(damaged, POLICY)
        except DecodeError as err:
            assert FORMAT_NAME.search(str(err)), (name, pos, mask, str(err))
            continue
        assert decoded.array.shape == CLEAN[name].array.shape, (name, pos, mask)
        assert decoded.meta == CLEAN[name].meta, (name, pos, mask)


@pytest.mark.parametrize("name", ["png"])
def test_crc_protected_formats_refuse_every_changed_byte(name):
    for pos, mask, damaged in _flipped(name):
        assert re.match(r"corrupt PNG: CRC mismatch in chunk IDAT", _reason(damaged)), (pos, mask)
    data, _ = CORPUS[name]
    for pos in range(8, 33):  # and in the header chunk (IHDR), past the signature
        damaged = bytearray(data)
        damaged[pos] ^= 0x10
        reason = _reason(bytes(damaged))  # a changed length reads as a cut file: either reason
        assert re.match(r"(corrupt|truncated|corrupt or truncated) PNG", reason), (pos, reason)


def _jpeg_with_scan_byte(after_ff: int) -> bytes:
    """The baseline JPEG with one stuffed 0xFF 0x00 in its scan turned into 0xFF `after_ff`."""
    data, (start, stop) = CORPUS["jpeg"]
    i = data.index(b"\xff\x00", start + (stop - start) // 2)
    return data[: i + 1] + bytes([after_ff]) + data[i + 2 :]


def test_pixel_data_pillow_refuses_is_an_error_not_the_partial_image_it_keeps():
    """The issue's case: a PNG whose deflate data is damaged but whose CRCs were recomputed. Pillow's
    load() fails; reading EXIF used to trigger (and swallow) that failure, and the second load()
    returned the half-decoded image, which was written as a sample."""
    data, (start, stop) = CORPUS["png"]
    body = bytearray(data[start:stop])
    middle = len(body) // 2
    body[middle : middle + 40] = bytes(b ^ 0xFF for b in body[middle : middle + 40])
    crc = struct.pack(">I", zlib.crc32(b"IDAT" + bytes(body)))
    damaged = data[:start] + bytes(body) + crc + data[stop + 4 :]
    assert re.match(r"corrupt or truncated PNG: OSError: ", _reason(damaged))


def test_jpeg_markers_inside_the_scan_are_refused():
    """What libjpeg only warns about (Pillow silences it) and then fills with flat grey: a marker
    inside the entropy-coded data, an early EOI, restart markers out of sequence."""
    assert re.match(
        r"corrupt JPEG: unexpected marker 0xFF5A at byte \d+", _reason(_jpeg_with_scan_byte(0x5A))
    )
    assert "ends the scan early" in _reason(_jpeg_with_scan_byte(0xD9))
    assert re.match(r"corrupt JPEG: unexpected marker 0xFFC0", _reason(_jpeg_with_scan_byte(0xC0)))
    data, (start, stop) = CORPUS["jpeg-restart"]
    i = data.index(b"\xff\xd3", start)  # RST3 -> RST5
    assert "restart marker RST5" in _reason(data[: i + 1] + b"\xd5" + data[i + 2 :])


def test_extraneous_bytes_after_the_last_mcu_leave_the_image_whole():
    """libjpeg warns 'N extraneous bytes before marker 0xd9' (Pillow does not say so); the image is
    whole and identical, so it is a sample."""
    data, _ = CORPUS["jpeg"]
    decoded = decode_image(data[:-2] + b"\x12\x34\x56\x78" * 8 + data[-2:], POLICY)
    assert np.array_equal(decoded.array, CLEAN["jpeg"].array)


def test_a_jpeg_trailer_or_a_second_image_after_eoi_is_kept():
    """Bytes after EOI (phone trailers, an MPO's next image) are not damage."""
    data, _ = CORPUS["jpeg"]
    for tail in (b"\x00" * 64, b"SEFHtrailer" * 10, data):
        decoded = decode_image(data + tail, POLICY)
        assert np.array_equal(decoded.array, CLEAN["jpeg"].array)


def _exif_jpeg() -> tuple[bytes, int, str]:
    """A JPEG whose EXIF says 'rotate 90' and holds a long description: (bytes, TIFF header at, order)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010E] = "a long image description, stored outside the IFD entry " * 2
    data = _save(_photo(), "JPEG", quality=90, exif=exif.tobytes())
    at = data.index(b"Exif\x00\x00") + 6
    return data, at, "<" if data[at : at + 2] == b"II" else ">"


def test_broken_exif_is_an_error_not_an_unrotated_image():
    data, at, order = _exif_jpeg()
    assert decode_image(data, POLICY).meta["original_size"] == [96, 128]  # rotated
    (ifd,) = struct.unpack_from(order + "I", data, at + 4)
    (count,) = struct.unpack_from(order + "H", data, at + ifd)
    damaged = bytearray(data)
    for k in range(count):
        entry = at + ifd + 2 + 12 * k
        if struct.unpack_from(order + "H", data, entry)[0] == 0x010E:
            struct.pack_into(order + "I", damaged, entry + 8, 0x7FFF0000)  # value past the file's end
    assert "its header or metadata" in _reason(bytes(damaged))
    damaged = bytearray(data)
    struct.pack_into(order + "H", damaged, at + ifd, 0xFFFF)  # more entries than the block holds
    assert re.search(r"corrupt JPEG .*EXIF", _reason(bytes(damaged)))


def test_pillows_truncated_images_switch_is_refused(monkeypatch):
    """With LOAD_TRUNCATED_IMAGES Pillow pads with grey: the decoder refuses to run at all."""
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        decode_image(CORPUS["bmp"][0], POLICY)


def test_png_chunks_must_reach_iend():
    data, _ = CORPUS["png"]
    assert _reason(data[:-12]) == "truncated PNG: the file ends before its IEND chunk"
    body = data[8:-12]
    chunk = struct.pack(">I", 0) + b"IEND"
    fixed = data[:8] + body + chunk + struct.pack(">I", zlib.crc32(b"IEND"))
    assert np.array_equal(decode_image(fixed, POLICY).array, CLEAN["png"].array)


def test_the_device_path_sends_damaged_jpegs_to_the_cpu_path():
    """--decode gpu: nvJPEG is not trusted with a damaged scan; the CPU path then refuses it."""
    assert isinstance(probe_jpeg(CORPUS["jpeg"][0], POLICY), Probe)
    reason = probe_jpeg(_jpeg_with_scan_byte(0xD9), POLICY)
    assert isinstance(reason, str) and "ends the scan early" in reason
    data, at, order = _exif_jpeg()
    assert probe_jpeg(data, POLICY).orientation == 6
    (ifd,) = struct.unpack_from(order + "I", data, at + 4)
    (count,) = struct.unpack_from(order + "H", data, at + ifd)
    damaged = bytearray(data)
    struct.pack_into(order + "H", damaged, at + ifd, 0xFFFF)
    assert not isinstance(probe_jpeg(bytes(damaged), POLICY), Probe)
    damaged = bytearray(data)
    for k in range(count):  # the description's value moved past the block: both paths refuse it
        entry = at + ifd + 2 + 12 * k
        if struct.unpack_from(order + "H", data, entry)[0] == 0x010E:
            struct.pack_into(order + "I", damaged, entry + 8, 0x7FFF0000)
    assert "its header or metadata" in probe_jpeg(bytes(damaged), POLICY)


@pytest.mark.parametrize("compression", [None, "zlib", "lzw"])
def test_truncated_rasters_raise(compression):
    tifffile = pytest.importorskip("tifffile")
    bands = np.random.default_rng(0).integers(0, 65535, (4, 48, 64), dtype=np.uint16)
    buf = io.BytesIO()
    tifffile.imwrite(buf, bands, compression=compression, photometric="minisblack", planarconfig="separate")
    data = buf.getvalue()
    policy = ImagePolicy(size=None, channels=4)
    assert decode_raster(data, policy).array.shape == (4, 48, 64)
    for cut in TRUNCATIONS:
        end = len(data) + cut if cut < 0 else int(len(data) * cut)
        with pytest.raises(DecodeError, match="not a readable TIFF|truncated TIFF"):
            decode_raster(data[:end], policy)


def test_a_tiff_cut_inside_its_last_strip_is_refused():
    """A TIFF whose directory comes first (tifffile, most cameras) still opens when cut; its LZW strip
    would decode short without an error."""
    tifffile = pytest.importorskip("tifffile")
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.asarray(_photo()), compression="lzw", photometric="rgb")
    data = buf.getvalue()
    assert decode_image(data, POLICY).array.shape == (3, 96, 128)
    for cut in TRUNCATIONS:
        end = len(data) + cut if cut < 0 else int(len(data) * cut)
        assert re.match(r"truncated TIFF: strip \d+ ends at byte", _reason(data[:end])), cut


@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
def test_truncated_audio_raises(fmt):
    """libsndfile reads a cut WAV as a shorter clip without an error: the RIFF sizes say otherwise."""
    sf = pytest.importorskip("soundfile")
    from pipeline.preprocess.audio import AudioPolicy, decode_audio

    t = np.arange(8192) / 44100
    buf = io.BytesIO()
    sf.write(
        buf, np.stack([np.sin(2 * np.pi * 440 * t), np.cos(2 * np.pi * 220 * t)], 1) * 0.5, 44100, format=fmt
    )
    data = buf.getvalue()
    policy = AudioPolicy(sample_rate=44100, window=8192, hop=8192, channels=2)
    assert decode_audio(data, policy).meta["valid_length"] == 8192
    for cut in TRUNCATIONS:
        end = len(data) + cut if cut < 0 else int(len(data) * cut)
        with pytest.raises(DecodeError, match=f"truncated {fmt}|not a readable audio file"):
            decode_audio(data[:end], policy)
