"""--buckets and --flip-pair end to end: a real local Ray run over images of mixed aspect ratios, to
WebDataset and Zarr, read back with the stock webdataset / zarr / jsonschema libraries.

The corpus is cut from the bundled photos: wide, tall and square crops, so the run fills three
buckets, with shards that mix them (shard size 4). Expected buckets come from the pure rule
(choose_bucket), expected latents from encoding the preprocessed image (and its mirror) in-test.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
import webdataset as wds
import zarr
from e2e_helpers import SAMPLE_IMAGES, encode, read_errors, read_manifest, schema, sha256_file
from PIL import Image

pytestmark = pytest.mark.slow

BUCKETS = "64x64,80x48,48x80"  # multiples of 2^J = 8 of the test codec
SHAPES = {(5, 3): (130, 78), (3, 5): (78, 130), (1, 1): (96, 96), (2, 1): (160, 80)}  # aspect -> crop W, H


@pytest.fixture(scope="module")
def mixed_corpus(tmp_path_factory) -> Path:
    """12 images in 2 class folders: crops of the bundled photos in four aspect ratios."""
    root = tmp_path_factory.mktemp("mixed") / "train"
    photos = sorted(SAMPLE_IMAGES.glob("*/*.JPEG"))[:12]
    aspects = list(SHAPES)
    for i, path in enumerate(photos):
        w, h = SHAPES[aspects[i % len(aspects)]]
        img = Image.open(path).convert("RGB")
        img = img.crop((0, 0, min(img.width, w * 2), min(img.height, h * 2))).resize((w, h))
        folder = root / f"n0000000{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / f"img_{i:02d}.png")
    return root


def _expected(corpus: Path) -> dict[str, tuple[str, np.ndarray]]:
    """file name stem -> (bucket, codec input (C, H, W) float) from the pure preprocessing."""
    from pipeline.preprocess.image import ImagePolicy, decode_image, parse_buckets, to_codec_input

    policy = ImagePolicy(channels=3, multiple=8, buckets=parse_buckets(BUCKETS, 8))
    out = {}
    for p in sorted(corpus.rglob("*.png")):
        d = decode_image(p.read_bytes(), policy)
        out[p.stem] = (d.meta["bucket"], to_codec_input(d.array))
    return out


def _encode_pair(codec_path: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from pipeline.codec import load

    codec = load(codec_path).freeze()
    t = torch.from_numpy(x)[None]
    return codec.encode(t).numpy()[0], codec.encode(t.flip(-1)).numpy()[0]


def _stem(meta: dict) -> str:
    return Path(meta["source"]).stem


def test_webdataset_buckets_and_flip_pairs(ray_session, mixed_corpus, klt_codec, tmp_path):
    output = tmp_path / "wds"
    summary = encode(
        mixed_corpus, output, klt_codec, image={"buckets": BUCKETS, "size": None}, sink={"flip_pair": True}
    )
    assert (summary.inputs, summary.written, summary.errors) == (12, 12, 0)
    manifest = read_manifest(output)  # schema-validated
    expected = _expected(mixed_corpus)
    counts = Counter(b for b, _ in expected.values())
    assert len(counts) == 3  # the corpus really spreads over the buckets

    assert manifest["run"]["flip_pair"] is True
    assert manifest["preprocessing"]["buckets"] == ["48x80", "64x64", "80x48"]
    assert manifest["latent"]["shape"] is None
    assert manifest["buckets"] == {
        b: {"samples": counts[b], "latent_shape": [12, int(b.split("x")[1]) // 8, int(b.split("x")[0]) // 8]}
        for b in ["48x80", "64x64", "80x48"]
    }

    # one tar per bucket present in each shard, named by it, each listed as a part with its hash
    listed = {}
    for entry in manifest["shards"]:
        assert entry["parts"], entry
        assert sum(p["samples"] for p in entry["parts"]) == entry["samples"]
        assert entry["name"] == entry["parts"][0]["name"]
        for part in entry["parts"]:
            assert part["name"] == f"shard-{entry['shard']:06d}-b{part['bucket']}.tar"
            assert sha256_file(output / part["name"]) == part["sha256"]
            assert (output / part["name"]).stat().st_size == part["bytes"]
            listed[part["name"]] = part
    assert sorted(listed) == sorted(p.name for p in output.glob("*.tar"))
    assert any(len(e["parts"]) > 1 for e in manifest["shards"])  # some shard mixes buckets

    sample_schema = schema("sample.schema.json")
    seen = []
    for name, part in sorted(listed.items()):
        samples = list(wds.WebDataset(str(output / name), shardshuffle=False).decode())
        assert len(samples) == part["samples"]
        assert (samples[0]["__key__"], samples[-1]["__key__"]) == (part["keys_first"], part["keys_last"])
        for s in samples:
            meta = s["json"]
            jsonschema.validate(meta, sample_schema)
            bucket, x = expected[_stem(meta)]
            assert meta["bucket"] == bucket == part["bucket"]
            w, h = (int(v) for v in bucket.split("x"))
            assert meta["crop_box"][2] - meta["crop_box"][0] == w and meta["input_size"] == [h, w]
            z, z_flip = _encode_pair(klt_codec, x)
            assert s["latent.npy"].dtype == np.int8 and s["latent.npy"].shape == (12, h // 8, w // 8)
            np.testing.assert_array_equal(s["latent.npy"], z)
            np.testing.assert_array_equal(s["latent_flip.npy"], z_flip)  # the mirrored input's latent
            assert not np.array_equal(z, z_flip)
            seen.append(s["__key__"])
    assert len(seen) == len(set(seen)) == 12
    assert read_errors(output) == []


def test_zarr_per_bucket_arrays(ray_session, mixed_corpus, klt_codec, tmp_path):
    output = tmp_path / "zarr"
    summary = encode(
        mixed_corpus,
        output,
        klt_codec,
        image={"buckets": BUCKETS, "size": None},
        sink={"flip_pair": True, "format": "zarr"},
    )
    assert (summary.written, summary.errors) == (12, 0)
    manifest = read_manifest(output)
    expected = _expected(mixed_corpus)
    group = zarr.open_group(str(output / "latents.zarr"), mode="r")
    buckets = [str(b) for b in group["bucket"][:].tolist()]
    metas = [json.loads(m) if m else None for m in group["meta"][:].tolist()]
    assert "latents" not in group  # per-bucket arrays only
    assert sorted(group["buckets"].group_keys()) == ["48x80", "64x64", "80x48"]
    assert Counter(buckets) == Counter(b for b, _ in expected.values())
    for b, info in manifest["buckets"].items():
        latents, flips = group[f"buckets/{b}/latents"][:], group[f"buckets/{b}/latents_flip"][:]
        assert latents.shape == flips.shape == (12, *info["latent_shape"])
        assert info["samples"] == buckets.count(b)
        for row in range(12):
            if buckets[row] != b:  # sparse: other buckets' rows hold only the fill value
                assert not latents[row].any() and not flips[row].any()
                continue
            assert metas[row]["bucket"] == b
            z, z_flip = _encode_pair(klt_codec, expected[_stem(metas[row])][1])
            np.testing.assert_array_equal(latents[row], z)
            np.testing.assert_array_equal(flips[row], z_flip)
    assert group["valid"][:].all()
    # the parts of each zarr shard add up, per bucket, to the manifest's counts
    per_bucket = Counter()
    for entry in manifest["shards"]:
        for part in entry["parts"]:
            per_bucket[part["bucket"]] += part["samples"]
    assert dict(per_bucket) == {b: i["samples"] for b, i in manifest["buckets"].items() if i["samples"]}
