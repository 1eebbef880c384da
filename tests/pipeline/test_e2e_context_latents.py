"""A real run with `--latent-format context` and the bundled default codec: the loader reads it, and
the dataset decodes with `rgb-16x` (same encoder hash, another decoder); another encoder is refused."""

from __future__ import annotations

import pytest
import torch
from e2e_helpers import SIZE, encode, read_manifest, read_webdataset

from pipeline.codec import load
from pipeline.codec.entropy import LatentFormatError, decode_latents
from pipeline.loaders import CodecMismatchError, LatentWebDataset, RunInfo

pytestmark = pytest.mark.slow


def test_klt_dataset_decodes_with_rgb16x(ray_session, corpus, klt_codec, tmp_path):
    output = tmp_path / "context"
    summary = encode(corpus, output, "rgb-16x-klt", sink={"latent_format": "context"})
    assert summary.written == 24 and not summary.failed_shards
    manifest = read_manifest(output)
    klt, deep = load("rgb-16x-klt"), load("rgb-16x")
    assert manifest["run"]["latent_format"] == "context" and manifest["codec"]["hash"] == klt.hash

    samples = read_webdataset(output)
    loaded = {b.meta["key"]: b.latents for b in LatentWebDataset(str(output), output="int", with_meta=True)}
    assert sorted(loaded) == sorted(s["__key__"] for s in samples)
    for s in samples:
        z, header = decode_latents(s["latent.wlat"])
        assert header.method == "context" and tuple(header.size) == (SIZE, SIZE)
        assert (header.codec_hash, header.encoder_hash) == (klt.hash, klt.encoder_hash)
        assert torch.equal(deep.from_bytes(s["latent.wlat"]), z)
        assert torch.equal(loaded[s["__key__"]], z)

    codec = RunInfo.open(str(output)).codec("rgb-16x")
    assert codec.hash == deep.hash
    z = next(iter(loaded.values()))
    pixels = codec.decode(z[None].float(), size=(SIZE, SIZE))
    assert pixels.shape == (1, 3, SIZE, SIZE) and torch.isfinite(pixels).all()

    other = load(klt_codec)  # another encoder (fitted on the samples)
    with pytest.raises(CodecMismatchError):
        RunInfo.open(str(output)).codec(str(klt_codec))
    with pytest.raises(LatentFormatError, match="written by codec"):
        other.from_bytes(samples[0]["latent.wlat"])
