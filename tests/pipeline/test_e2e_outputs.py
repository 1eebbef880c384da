"""End-to-end runs on a real local Ray, read back with the stock libraries (webdataset, zarr, pyarrow).

The corpus is the bundled ImageNet-layout sample (24 photos in 4 class folders) plus one corrupt
file, encoded with a fitted KLT codec (see conftest), so every sample's latents can be checked
against the image it claims to come from.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
import zarr
from e2e_helpers import (
    SHARD_SIZE,
    SIZE,
    assert_same_tree,
    encode,
    psnr,
    read_errors,
    read_manifest,
    read_webdataset,
    schema,
    sha256_file,
    uri_to_path,
)

pytestmark = pytest.mark.slow

MIN_PSNR = 17.0  # the KLT codec gives 20-41 dB on these photos; another photo's latents give < 15


def _input_files(corpus: Path) -> list[Path]:
    return sorted(p for p in corpus.rglob("*") if p.is_file())


def _preprocessed(path: Path) -> np.ndarray:
    """The codec input the pipeline should have encoded for this file (float (C, H, W))."""
    from pipeline.preprocess.image import ImagePolicy, decode_image, to_codec_input

    policy = ImagePolicy(size=SIZE, crop="center", channels=3, multiple=8)
    return to_codec_input(decode_image(path.read_bytes(), policy).array)


def _decode(codec_path: Path, latent: np.ndarray) -> np.ndarray:
    from pipeline.codec import load

    codec = load(codec_path).freeze()
    return codec.decode(torch.from_numpy(latent)[None]).numpy()[0]


def _latents_by_key(samples: list[dict]) -> dict[str, np.ndarray]:
    return {s["__key__"]: s["latent.npy"] for s in samples}


def test_webdataset_output_reads_back_with_stock_libraries(reference_run, corpus, klt_codec):
    output = reference_run
    manifest = read_manifest(output)  # validates against schemas/manifest.schema.json
    files = _input_files(corpus)
    assert len(files) == 25

    # every shard the manifest lists is there, with the recorded size and sha256; no other shards
    assert sorted(s["name"] for s in manifest["shards"]) == sorted(p.name for p in output.glob("*.tar"))
    for entry in manifest["shards"]:
        path = output / entry["name"]
        assert path.stat().st_size == entry["bytes"]
        assert sha256_file(path) == entry["sha256"], entry["name"]
    assert len(manifest["shards"]) == -(-len(files) // SHARD_SIZE)

    samples = read_webdataset(output)
    errors = read_errors(output)
    keys = [s["__key__"] for s in samples]
    assert len(keys) == len(set(keys)), "duplicate keys"

    # every input is exactly one sample or one error row
    sample_sources = [s["json"]["source"] for s in samples]
    error_sources = [e["source"] for e in errors]
    assert sorted(uri_to_path(u) for u in sample_sources + error_sources) == files
    assert manifest["totals"] == {"inputs": 25, "written": 24, "errors": 1}
    assert manifest["source"]["items"] == 25
    assert sum(s["samples"] for s in manifest["shards"]) == 24

    # the corrupt file: a decode error with a specific reason, in the shard it was planned in
    assert len(errors) == 1
    (error,) = errors
    assert uri_to_path(error["source"]).name == "n00000005_corrupt.JPEG"
    assert error["stage"] == "decode"
    assert "not a recognised image format" in error["reason"]
    assert error["key"] not in keys

    latent_shape = manifest["latent"]["shape"]
    assert latent_shape == [12, SIZE // 8, SIZE // 8]
    sample_schema = schema("sample.schema.json")
    label_map = manifest["label_map"]
    assert sorted(label_map) == sorted(p.name for p in corpus.iterdir())
    for s in samples:
        meta = s["json"]
        jsonschema.validate(meta, sample_schema)
        assert meta["key"] == s["__key__"]
        latent = s["latent.npy"]
        assert latent.dtype == np.int8 and list(latent.shape) == latent_shape
        source = uri_to_path(meta["source"])
        assert s["cls"] == label_map[source.parent.name] == meta["label"]
        assert meta["class"] == source.parent.name
        assert meta["input_size"] == [SIZE, SIZE]
        # the latents are this image's: decoding them gives back the preprocessed image
        quality = psnr(_decode(klt_codec, latent), _preprocessed(source))
        assert quality > MIN_PSNR, f"{s['__key__']}: PSNR {quality:.1f} dB"

    # samples come in input order, shard by shard
    assert sample_sources == sorted(sample_sources)


def test_zarr_output_reads_back_and_matches_webdataset(reference_run, corpus, klt_codec, tmp_path):
    output = tmp_path / "zarr"
    summary = encode(corpus, output, klt_codec, sink={"format": "zarr"})
    assert (summary.inputs, summary.written, summary.errors) == (25, 24, 1)
    manifest = read_manifest(output)
    assert manifest["run"]["sink"] == "zarr"

    group = zarr.open_group(str(output / "latents.zarr"), mode="r")
    latents = group["latents"][:]
    valid = group["valid"][:]
    keys = np.array(group["keys"][:].tolist(), dtype=object)  # zarr 3 gives numpy StringDType
    labels = group["labels"][:]
    metas = group["meta"][:].tolist()
    assert latents.dtype == np.int8 and latents.shape == (25, 12, SIZE // 8, SIZE // 8)
    assert valid.dtype == bool and valid.sum() == 24

    # row i is input i: the invalid row is the corrupt file, with an empty key and label -1
    files = _input_files(corpus)
    (bad,) = np.flatnonzero(~valid)
    assert files[bad].name == "n00000005_corrupt.JPEG"
    assert keys[bad] == "" and labels[bad] == -1 and not latents[bad].any()

    wds_latents = _latents_by_key(read_webdataset(reference_run))
    assert sorted(keys[valid]) == sorted(wds_latents)
    sample_schema = schema("sample.schema.json")
    label_map = manifest["label_map"]
    for i in np.flatnonzero(valid):
        meta = json.loads(metas[i])
        jsonschema.validate(meta, sample_schema)
        assert meta["key"] == keys[i]
        assert uri_to_path(meta["source"]) == files[i]
        assert labels[i] == label_map[files[i].parent.name]
        np.testing.assert_array_equal(latents[i], wds_latents[keys[i]], err_msg=keys[i])


def test_zstd_latents_decode_to_the_npy_latents(reference_run, corpus, klt_codec, tmp_path):
    from pipeline.codec.entropy import decode_latents

    output = tmp_path / "zstd"
    encode(corpus, output, klt_codec, sink={"latent_format": "zstd"})
    manifest = read_manifest(output)
    assert manifest["run"]["latent_format"] == "zstd"
    reference = _latents_by_key(read_webdataset(reference_run))
    samples = read_webdataset(output)
    assert sorted(s["__key__"] for s in samples) == sorted(reference)
    for s in samples:
        assert "latent.npy" not in s
        z, header = decode_latents(s["latent.wlat"])
        assert header.method == "zstd"
        assert header.codec_hash == manifest["codec"]["hash"]
        assert tuple(header.size) == (SIZE, SIZE)
        np.testing.assert_array_equal(z.numpy(), reference[s["__key__"]], err_msg=s["__key__"])


def test_same_command_gives_identical_bytes(reference_run, corpus, klt_codec, tmp_path):
    output = tmp_path / "again"
    encode(corpus, output, klt_codec)
    # shards, manifest.json, errors.parquet, markers and run state: byte for byte
    assert_same_tree(reference_run, output)
