"""The bundled sample corpus (pipeline/samples/) is what the default job and many tests run on: check it.

A broken bundle (a file lost, truncated, edited by hand, or a layout change) fails here, not later in a
job as a confusing decode error. Regenerate it with `python scripts/fetch_data.py --bundle`.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SAMPLES = Path(__file__).resolve().parents[1] / "pipeline" / "samples"
IMAGES = SAMPLES / "images"
AUDIO = SAMPLES / "audio"
WNID = re.compile(r"n\d{8}")


def read_tsv(path: Path) -> list[dict[str, str]]:
    header, *lines = path.read_text().splitlines()
    keys = header.split("\t")
    return [dict(zip(keys, line.split("\t"), strict=True)) for line in lines]


def flac_streaminfo(path: Path) -> dict:
    """FLAC's STREAMINFO block (always first): read with no decoder, so the layout is checked anywhere."""
    head = path.read_bytes()[:42]
    assert head[:4] == b"fLaC", f"{path.name}: not a FLAC file"
    assert head[4] & 0x7F == 0 and int.from_bytes(head[5:8], "big") == 34, "first block must be STREAMINFO"
    bits = int.from_bytes(head[18:26], "big")  # rate:20 | channels-1:3 | bits-1:5 | samples:36
    return {
        "sample_rate": bits >> 44,
        "channels": ((bits >> 41) & 0x7) + 1,
        "bits": ((bits >> 36) & 0x1F) + 1,
        "frames": bits & ((1 << 36) - 1),
        "md5": head[26:42].hex(),  # of the decoded samples, interleaved little-endian
    }


IMAGE_FILES = sorted(IMAGES.glob("train/*/*"))
AUDIO_FILES = sorted(AUDIO.glob("*.flac"))


def test_images_are_imagenet_train_layout():
    assert sorted(p.name for p in IMAGES.iterdir()) == ["LOC_synset_mapping.txt", "SOURCES.tsv", "train"]
    classes = sorted(p.name for p in (IMAGES / "train").iterdir())
    assert 3 <= len(classes) <= 4, classes
    for wnid in classes:
        assert WNID.fullmatch(wnid), wnid
        files = sorted(p.name for p in (IMAGES / "train" / wnid).iterdir())
        assert 4 <= len(files) <= 6, (wnid, files)
        assert all(re.fullmatch(rf"{wnid}_\d+\.JPEG", f) for f in files), files
    mapping = [line.split(" ", 1) for line in (IMAGES / "LOC_synset_mapping.txt").read_text().splitlines()]
    assert [wnid for wnid, _ in mapping] == classes
    assert all(name.strip() for _, name in mapping)


@pytest.mark.parametrize("path", IMAGE_FILES, ids=lambda p: p.name)
def test_image_decodes_to_rgb_of_documented_size(path):
    with Image.open(path) as im:
        assert im.format == "JPEG"
        assert im.mode == "RGB"
        im.load()  # the whole stream, not just the header
        pixels = np.asarray(im)
    assert 256 <= pixels.shape[0] <= 512 and 256 <= pixels.shape[1] <= 512, pixels.shape
    assert pixels.std() > 1.0, "a flat image is no photograph"
    (row,) = [r for r in read_tsv(IMAGES / "SOURCES.tsv") if r["file"] == path.relative_to(IMAGES).as_posix()]
    assert row["size"] == f"{pixels.shape[1]}x{pixels.shape[0]}"


def test_images_fit_the_size_budget():
    assert len(IMAGE_FILES) >= 12
    assert sum(p.stat().st_size for p in IMAGE_FILES) < 1.5e6


@pytest.mark.parametrize("root", [IMAGES, AUDIO], ids=["images", "audio"])
def test_sources_tsv_lists_every_file_with_its_sha256(root):
    rows = read_tsv(root / "SOURCES.tsv")
    pattern = "train/*/*" if root == IMAGES else "*.flac"
    assert sorted(r["file"] for r in rows) == sorted(
        p.relative_to(root).as_posix() for p in root.glob(pattern)
    )
    for r in rows:
        data = (root / r["file"]).read_bytes()
        assert len(data) == int(r["bytes"]), r["file"]
        assert hashlib.sha256(data).hexdigest() == r["sha256"], (
            f"{r['file']} changed: regenerate with --bundle"
        )
        assert r["license"] and r["source"]


def test_audio_clips_are_stereo_44k_16bit_and_fit_the_budget():
    assert sorted(p.name for p in AUDIO.iterdir() if p.suffix != ".flac") == ["SOURCES.tsv"]
    assert 2 <= len(AUDIO_FILES) <= 3
    assert sum(p.stat().st_size for p in AUDIO_FILES) < 2e6
    for path in AUDIO_FILES:
        info = flac_streaminfo(path)
        assert (info["sample_rate"], info["channels"], info["bits"]) == (44100, 2, 16), path.name
        assert 6.0 <= info["frames"] / info["sample_rate"] <= 10.0, path.name


@pytest.mark.parametrize("path", AUDIO_FILES, ids=lambda p: p.name)
def test_audio_decodes_to_the_samples_flac_recorded(path):
    soundfile = pytest.importorskip("soundfile", reason="the `data` extra decodes FLAC")
    info = flac_streaminfo(path)
    pcm, rate = soundfile.read(path, dtype="int16", always_2d=True)
    assert rate == info["sample_rate"] and pcm.shape == (info["frames"], info["channels"])
    assert hashlib.md5(pcm.astype("<i2").tobytes()).hexdigest() == info["md5"]  # bit-exact decode
    rms = np.sqrt(np.mean(pcm.astype(np.float64) ** 2))
    assert rms > 300, "near-silence is no music clip"
    assert not np.array_equal(pcm[:, 0], pcm[:, 1]), "a real stereo mix, not duplicated mono"
