"""Awkward and broken images through the real job on Ray: each is a sane sample or a specific error row.

The corpus is generated here from the bundled photos: every odd mode and container that Pillow
opens, plus files that must fail with a reason a person can act on (not a generic one).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from e2e_helpers import (
    SAMPLE_IMAGES,
    SIZE,
    png_bomb,
    psnr,
    read_errors,
    read_manifest,
    read_webdataset,
    run_job,
    standard_args,
    uri_to_path,
)
from PIL import Image

pytestmark = pytest.mark.slow

MIN_PSNR = 15.0  # sane: a low bar for the KLT codec (photos give 20-40 dB, a wrong image < 13 dB)
LATENT_SHAPE = (12, SIZE // 8, SIZE // 8)


def _photo(name: str = "n00000004/n00000004_3.JPEG") -> Image.Image:
    return Image.open(SAMPLE_IMAGES / name).convert("RGB")


def _save(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def _exif_rotated() -> bytes:
    """200x100 as stored (left half black, right half white), EXIF orientation 6 (rotate 90 CW)."""
    arr = np.full((100, 200, 3), 255, np.uint8)
    arr[:, :100] = 0
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(Image.fromarray(arr), "JPEG", quality=95, exif=exif.tobytes())


def _palette_with_transparency() -> bytes:
    """A palette PNG whose top half is index 0: black, but transparent (so: white over white)."""
    photo = _photo().resize((96, 96)).quantize(colors=200)
    idx = np.asarray(photo).astype(np.uint8) + 1  # indices 1..200: the photo
    idx[:48] = 0
    palette = [0, 0, 0] + photo.getpalette()[: 3 * 200]
    img = Image.fromarray(idx, mode="P")
    img.putpalette(palette)
    return _save(img, "PNG", transparency=0)


def _animated_gif() -> bytes:
    frames = [
        _photo(n).resize((80, 80)) for n in ("n00000004/n00000004_3.JPEG", "n00000008/n00000008_2.JPEG")
    ]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _gray16() -> bytes:
    gray = np.asarray(_photo().convert("L")).astype(np.uint16) * 257
    img = Image.fromarray(gray)
    assert img.mode == "I;16"
    return _save(img, "PNG")


def _corpus(root: Path) -> dict[str, dict]:
    """Write the corpus; returns file name -> what must happen to it."""
    photo = _photo()
    jpeg = _save(photo, "JPEG", quality=90)
    png = _save(photo, "PNG")
    cases = {
        # must fail, each with its own reason
        "zero_bytes.jpg": (b"", {"error": r"^empty file \(0 bytes\)$"}),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], {"error": r"^truncated JPEG: the file ends inside"}),
        "truncated.png": (
            png[: len(png) // 2],
            {"error": r"^truncated PNG: chunk IDAT at byte \d+ runs past"},
        ),
        "random_bytes.jpg": (
            np.random.default_rng(1).bytes(5000),
            {"error": r"^not a recognised image format$"},
        ),
        "text_file.jpg": (
            b"just some notes, not a picture\n" * 20,
            {"error": r"^not a recognised image format$"},
        ),
        "bomb.png": (png_bomb(100_000, 100_000), {"error": r"decompression bomb|over the cap"}),
        # must become samples
        "cmyk.jpg": (_save(photo.convert("CMYK"), "JPEG", quality=95), {"mode": "CMYK"}),
        "gray16.png": (_gray16(), {"mode": "I;16"}),
        "gray.jpg": (_save(photo.convert("L"), "JPEG", quality=95), {"mode": "L"}),
        "palette_transparent.png": (_palette_with_transparency(), {"mode": "P"}),
        "animated.gif": (_animated_gif(), {"mode": "P"}),
        "exif_rotated.jpg": (_exif_rotated(), {"mode": "RGB", "original_size": [100, 200]}),
        "one_pixel.png": (_save(Image.new("RGB", (1, 1), (200, 30, 90)), "PNG"), {"mode": "RGB"}),
        "progressive.jpg": (_save(photo, "JPEG", quality=90, progressive=True), {"mode": "RGB"}),
        "photo.webp": (_save(photo, "WEBP", quality=90), {"mode": "RGB"}),
    }
    root.mkdir(parents=True)
    for name, (data, _) in cases.items():
        (root / name).write_bytes(data)
    return {name: expect for name, (_, expect) in cases.items()}


def test_bad_and_unusual_images(ray_session, klt_codec, tmp_path):
    from pipeline.codec import load
    from pipeline.preprocess.image import ImagePolicy, decode_image, to_codec_input

    corpus = tmp_path / "mixed"
    expected = _corpus(corpus)
    output = tmp_path / "out"
    assert run_job(standard_args(corpus, output, klt_codec)) == 0

    manifest = read_manifest(output)
    errors = {uri_to_path(e["source"]).name: e for e in read_errors(output)}
    samples = {uri_to_path(s["json"]["source"]).name: s for s in read_webdataset(output)}
    totals = manifest["totals"]
    assert totals["inputs"] == len(expected) == totals["written"] + totals["errors"]
    assert not set(errors) & set(samples)
    keys = [s["__key__"] for s in samples.values()] + [e["key"] for e in errors.values()]
    assert len(set(keys)) == len(expected), "every input has its own key (truncated.jpg vs truncated.png)"
    assert sorted(errors) == sorted(n for n, e in expected.items() if "error" in e)
    assert sorted(samples) == sorted(n for n, e in expected.items() if "error" not in e)

    for name, row in errors.items():
        assert row["stage"] == "decode", (name, row)
        assert re.search(expected[name]["error"], row["reason"]), (name, row["reason"])

    codec = load(klt_codec).freeze()
    policy = ImagePolicy(size=SIZE, crop="center", channels=3, multiple=8)
    for name, s in samples.items():
        meta, latent = s["json"], s["latent.npy"]
        assert latent.dtype == np.int8 and latent.shape == LATENT_SHAPE, name
        for field, value in expected[name].items():
            assert meta[field] == value, (name, field, meta[field])
        recon = codec.decode(torch.from_numpy(latent)[None]).numpy()[0]
        target = to_codec_input(decode_image((corpus / name).read_bytes(), policy).array)
        quality = psnr(recon, target)
        assert quality > MIN_PSNR, f"{name}: PSNR {quality:.1f} dB"
        if name == "exif_rotated.jpg":
            # displayed upright, the black half is on top: the reconstruction must show it there
            top, bottom = recon[:, : SIZE // 2].mean(), recon[:, SIZE // 2 :].mean()
            assert top < -0.3 and bottom > 0.3, (top, bottom)
        if name == "palette_transparent.png":
            # the transparent (black) top half is composited over white, not truncated to black
            assert recon[:, : SIZE // 4].mean() > 0.4


def test_a_truncated_jpeg_is_a_decode_error_row(ray_session, klt_codec, tmp_path):
    """Through run_encode on Ray: a JPEG cut inside its scan is an error row (stage decode), not a
    sample padded with grey; the other inputs are written."""
    from e2e_helpers import encode

    root = tmp_path / "train"
    photos = sorted(SAMPLE_IMAGES.glob("*/*.JPEG"))[:3]
    for p in photos:
        (root / p.parent.name).mkdir(parents=True, exist_ok=True)
        (root / p.parent.name / p.name).write_bytes(p.read_bytes())
    data = photos[0].read_bytes()
    bad = root / photos[0].parent.name / "cut.JPEG"
    bad.write_bytes(data[: int(len(data) * 0.6)])
    summary = encode(root, tmp_path / "out", klt_codec)
    assert (summary.written, summary.errors) == (3, 1)
    (error,) = read_errors(tmp_path / "out")
    assert error["stage"] == "decode" and uri_to_path(error["source"]) == bad
    assert error["reason"].startswith("truncated JPEG: the file ends inside the entropy-coded data")
    assert read_manifest(tmp_path / "out")["totals"] == {"inputs": 4, "written": 3, "errors": 1}
