"""The new sources through the whole pipeline on a local Ray (slow): audio windows and tar shards in,
WebDataset shards out, broken inputs as error rows next to the written samples."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from source_builders import add_member, image_bytes, write_wav

pytestmark = pytest.mark.slow


def _codec(tmp_path, **config):
    from pipeline.codec import CodecConfig, build, save

    return str(save(build(CodecConfig(**config)), tmp_path / "codec", name="test-codec"))


def _samples(output) -> dict[str, dict]:
    samples = {}
    for shard in sorted(output.glob("*.tar")):
        for sample in wds.WebDataset(str(shard), shardshuffle=False, empty_check=False):
            samples[sample["__key__"]] = sample
    return samples


def _errors(output) -> dict[str, dict]:
    return {row["key"]: row for row in pq.read_table(output / "errors.parquet").to_pylist()}


def test_audio_folder_end_to_end(tmp_path, ray_session):
    from pipeline.config import AudioSettings, EncodeConfig
    from pipeline.runtime import run_encode
    from pipeline.sinks import SinkSpec

    corpus = tmp_path / "audio"
    write_wav(corpus / "stereo.flac", 0.5, 44100, 2, "PCM_16")  # 8000 samples at 16 kHz: 2 windows
    write_wav(corpus / "mono48k.wav", 0.2, 48000, 1, "PCM_24")  # 3200 samples: 1 partial window
    write_wav(corpus / "surround.wav", 0.1, 16000, 6, "FLOAT")  # refused: 6 channels
    (corpus / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk")
    codec = _codec(tmp_path, kind="1d", channels=2, J=8, latent_dim=16, Nd=16, decoder="linear")
    output = tmp_path / "out"
    summary = run_encode(
        EncodeConfig(
            input=str(corpus),
            sink=SinkSpec(output=str(output), shard_size=2),
            codec=codec,
            audio=AudioSettings(window=4096, sample_rate=16000),
            progress=False,
        )
    )
    assert (summary.inputs, summary.written, summary.errors, summary.failed_shards) == (5, 3, 2, [])
    samples = _samples(output)
    assert sorted(samples) == ["mono48k_000000", "stereo_000000", "stereo_000001"]
    meta = json.loads(samples["mono48k_000000"]["json"])
    assert (meta["valid"], meta["channel_op"], meta["source_rate"], meta["offset"]) == (
        3200,
        "duplicate",
        48000,
        0,
    )
    assert meta["input_size"] == [4096] and len(meta["mean"]) == 2 and meta["scale"] > 0
    latent = np.load(io.BytesIO(samples["stereo_000001"]["latent.npy"]))
    assert latent.shape == (16, 4096 // 256 + 2) and latent.dtype == np.int8
    errors = _errors(output)
    assert (
        "6 channels" in errors["surround_000000"]["reason"] and errors["surround_000000"]["stage"] == "decode"
    )
    assert (
        "unreadable audio file" in errors["broken_000000"]["reason"]
        and errors["broken_000000"]["stage"] == "read"
    )
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["source"]["kind"] == "audio-folder" and manifest["source"]["window"] == 4096


def test_tar_shards_end_to_end(tmp_path, ray_session):
    from pipeline.config import EncodeConfig, ImageSettings
    from pipeline.runtime import run_encode
    from pipeline.sinks import SinkSpec

    shard = tmp_path / "shards" / "train-000000.tar"
    shard.parent.mkdir()
    with tarfile.open(shard, "w") as tar:
        add_member(tar, "a.jpg", image_bytes(1, "JPEG", (40, 48)))
        add_member(tar, "a.cls", b"2")
        add_member(tar, "../escape.png", image_bytes(2))
        add_member(tar, "link.png", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        add_member(tar, "bad.png", b"not a png")
        add_member(tar, "b.webp", image_bytes(3, "WEBP", (64, 32)))
    codec = _codec(tmp_path, kind="2d", channels=3, J=3, latent_dim=12, Nd=32, decoder="linear")
    output = tmp_path / "out"
    summary = run_encode(
        EncodeConfig(
            input=str(shard.parent),
            sink=SinkSpec(output=str(output)),
            codec=codec,
            image=ImageSettings(size=32),
            progress=False,
        )
    )
    assert (summary.inputs, summary.written, summary.errors) == (5, 2, 3)
    samples = _samples(output)
    assert sorted(samples) == ["a", "b"] and samples["a"]["cls"] == b"2"
    assert json.loads(samples["b"]["json"])["source"].endswith("train-000000.tar::b.webp")
    errors = _errors(output)
    assert errors["escape"]["stage"] == "read" and "unsafe tar member" in errors["escape"]["reason"]
    assert "symlink" in errors["link"]["reason"]
    assert errors["bad"]["stage"] == "decode"
