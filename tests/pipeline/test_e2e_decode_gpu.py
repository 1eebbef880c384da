"""--decode gpu end to end on a real local Ray, with the device decode path on the CPU device.

Mixed inputs (baseline, progressive, greyscale, EXIF-rotated JPEGs; CMYK JPEG; PNG; a JPEG with a
bogus Huffman table; a truncated JPEG): every input ends up in a shard or in the error table, the
fallbacks to the CPU path are counted per shard and in the totals, the manifest records the decode
backend, a rerun writes the same bytes, and a --decode cpu run refuses to resume into the output.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from e2e_helpers import (
    JOB,
    SAMPLE_IMAGES,
    SIZE,
    assert_same_tree,
    encode,
    read_errors,
    read_manifest,
    read_webdataset,
)
from PIL import Image

from pipeline.cli import config_from_args
from pipeline.config import EncodeConfig, RayConfig
from pipeline.preprocess.image import ImagePolicy, decode_image, to_codec_input
from pipeline.preprocess.image_device import DeviceDecodeSpec, DeviceImagePreprocessor, available_backend
from pipeline.runtime.driver import worker_plan
from pipeline.sinks import SinkSpec

DEVICE_RUN = {"ray": {"decode": "gpu", "decode_device": "cpu"}, "sink": {"shard_size": 4}}


def _jpeg(img: Image.Image, **kwargs) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90, **kwargs)
    return out.getvalue()


@pytest.fixture(scope="module")
def mixed_corpus(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """11 inputs in two class folders; returns (root, file name -> bytes)."""
    root = tmp_path_factory.mktemp("mixed") / "train"
    photos = sorted(SAMPLE_IMAGES.glob("*/*.JPEG"))
    src = [Image.open(p).convert("RGB") for p in photos[:6]]
    exif = src[1].getexif()
    exif[0x0112] = 6
    files = {
        "a/baseline0.jpg": photos[0].read_bytes(),
        "a/baseline1.jpg": photos[2].read_bytes(),
        "a/baseline2.jpg": photos[3].read_bytes(),
        "a/rotated.jpg": _jpeg(src[1], exif=exif.tobytes()),
        "a/progressive.jpg": _jpeg(src[4], progressive=True),
        "a/grey.jpg": _jpeg(src[5].convert("L")),
        "b/cmyk.jpg": _jpeg(src[0].convert("CMYK")),
        "b/broken.jpg": None,
        "b/truncated.jpg": photos[4].read_bytes()[:-3000],
    }
    good = photos[5].read_bytes()
    i = good.index(b"\xff\xc4")  # DHT marker: 16 bogus code counts, the header still reads
    files["b/broken.jpg"] = good[: i + 5] + b"\xff" * 16 + good[i + 21 :]
    png = io.BytesIO()
    src[2].save(png, "PNG")
    files["b/picture.png"] = png.getvalue()
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root, files


def test_decode_gpu_without_a_gpu_fails_at_once_with_a_clear_message(tmp_path):
    resources = {"CPU": 16.0}  # a cluster without GPUs
    gpu_decode = EncodeConfig(input="x", sink=SinkSpec(output="y"), ray=RayConfig(decode="gpu"))
    with pytest.raises(RuntimeError, match="--decode gpu was given but the Ray cluster has no GPUs"):
        worker_plan(gpu_decode, resources)
    assert worker_plan(gpu_decode, {"CPU": 16, "GPU": 2})[0] == 2
    import importlib.util

    spec = importlib.util.spec_from_file_location("encode_imagenet_job", JOB)
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    parser = job.build_parser()
    assert "--decode" in parser.format_help()
    args = parser.parse_args(["--decode", "gpu"])
    assert config_from_args(args).ray.decode == "gpu"
    assert config_from_args(parser.parse_args([])).ray.decode == "cpu"
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from pipeline.runtime import run_encode

    with pytest.raises(RuntimeError, match=r"--decode gpu needs a CUDA GPU.*torch.cuda.is_available\(\)"):
        run_encode(
            EncodeConfig(
                input=str(SAMPLE_IMAGES),
                sink=SinkSpec(output=str(tmp_path / "out")),
                ray=RayConfig(decode="gpu"),
            )
        )
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.slow
def test_mixed_inputs_fall_back_per_sample_and_reruns_are_byte_identical(
    ray_session, mixed_corpus, klt_codec, tmp_path
):
    from pipeline.codec import load
    from pipeline.runtime import OutputConflictError

    corpus, files = mixed_corpus
    output = tmp_path / "gpu"
    summary = encode(corpus, output, klt_codec, **DEVICE_RUN)
    assert not summary.failed_shards

    manifest = read_manifest(output)
    decode = manifest["preprocessing"]["decode"]
    assert decode["path"] == "device" and decode["backend"] == available_backend("cpu")
    assert "interpolate" in decode["resize"]

    samples = read_webdataset(output)
    errors = read_errors(output)
    by_name = {s["json"]["source"].rsplit("/train/", 1)[1]: s for s in samples}
    failed = {e["source"].rsplit("/train/", 1)[1]: e for e in errors}
    # every input is in a shard or in the error table, never both, never neither
    assert sorted([*by_name, *failed]) == sorted(files) and not set(by_name) & set(failed)
    totals = manifest["totals"]
    assert totals["inputs"] == len(files) == totals["written"] + totals["errors"]

    ways = {name: s["json"]["decode"] for name, s in by_name.items()}
    for name in ["a/baseline0.jpg", "a/baseline1.jpg", "a/rotated.jpg", "a/progressive.jpg", "a/grey.jpg"]:
        assert ways[name] == "device", name
    assert ways["b/cmyk.jpg"] == "cpu" and "CMYK" in by_name["b/cmyk.jpg"]["json"]["decode_fallback"]
    assert (
        ways["b/picture.png"] == "cpu" and by_name["b/picture.png"]["json"]["decode_fallback"] == "not a JPEG"
    )
    assert failed["b/broken.jpg"]["stage"] == "decode"
    assert "device path: device decoder refused" in failed["b/broken.jpg"]["reason"]
    # the truncated JPEG went to the CPU path (no end marker): a sample or an error row, counted either way
    if "b/truncated.jpg" in by_name:
        assert ways["b/truncated.jpg"] == "cpu"
    fallbacks = sum(w == "cpu" for w in ways.values())
    assert totals["decode_fallbacks"] == fallbacks and totals["decoded_on_device"] == len(ways) - fallbacks
    assert sum(s["decode_fallbacks"] for s in manifest["shards"]) == fallbacks
    assert summary.decode == {"decoded_on_device": len(ways) - fallbacks, "decode_fallbacks": fallbacks}
    assert "fell back to the CPU path" in summary.format()
    stored_w, stored_h = Image.open(io.BytesIO(files["a/rotated.jpg"])).size
    assert by_name["a/rotated.jpg"]["json"]["original_size"] == [stored_h, stored_w]  # EXIF 6 applied

    # latents are the codec's on the pixels each path produces (device path / CPU fallback)
    codec = load(str(klt_codec))
    policy = ImagePolicy(size=SIZE, channels=3, multiple=codec.config.block)
    device_pre = DeviceImagePreprocessor(policy, spec=DeviceDecodeSpec.for_device("cpu"))
    (dev,) = device_pre.decode_batch([files["a/baseline1.jpg"]])
    want = codec.encode(device_pre.codec_input(dev.array[None])).numpy()[0]
    np.testing.assert_array_equal(by_name["a/baseline1.jpg"]["latent.npy"], want)
    cpu = decode_image(files["b/cmyk.jpg"], policy).array
    want = codec.encode(torch.from_numpy(to_codec_input(cpu[None]))).numpy()[0]
    np.testing.assert_array_equal(by_name["b/cmyk.jpg"]["latent.npy"], want)

    # a rerun on the same backend writes the same bytes
    again = tmp_path / "again"
    encode(corpus, again, klt_codec, **DEVICE_RUN)
    assert_same_tree(output, again)

    # the decode path is part of the settings: --decode cpu does not resume into this output
    with pytest.raises(OutputConflictError, match=r"differs in preprocessing"):
        encode(corpus, output, klt_codec, sink={"shard_size": 4})
    assert_same_tree(again, output)
    shutil.rmtree(again)


@pytest.mark.slow
def test_gpu_path_benchmark_smoke_run_on_cpu(ray_session, tmp_path):
    """benchmarks/gpu_path.py --device cpu on tiny sizes: every row measured, agreement checked."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_path.py"
    spec = importlib.util.spec_from_file_location("gpu_path_bench", path)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its process pool pickles functions by module name
    spec.loader.exec_module(bench)
    argv = ["--device", "cpu", "--images", "4", "--count", "8", "--batch", "4", "--size", "32"]
    argv += ["--pipeline-count", "8", "--shard-size", "4", "--repeats", "1", "--workers", "2", "--no-warmup"]
    results = bench.main([*argv, "--json", str(tmp_path / "gpu_path.json")])
    rows = results["rows"]
    for name in [
        "PIL decode + resize + crop, 2 processes",
        "device decode alone",
        "device decode + resize + crop",
        "device decode + our encoder -> host int8",
        "our encoder",
    ]:
        assert rows[name] > 0, name
    for decode in ("gpu", "cpu"):
        run = rows[f"full pipeline --decode {decode}"]
        assert run["written"] == 8 and run["errors"] == 0 and run["rate"] > 0
    assert rows["full pipeline --decode gpu"]["decode"] == {"decoded_on_device": 8, "decode_fallbacks": 0}
    assert results["agreement"]["latents"]["mismatches"] == 0
    # a CPU smoke run judges no target; the reference row exists only where walloc is installed (make bench)
    assert len(results["targets"]) == 5 and not any(
        "PASS" in t or "FAIL" in t for t in results["targets"][:3]
    )
    assert all("not judged" in t for t in results["targets"][1:3])
    assert json.loads((tmp_path / "gpu_path.json").read_text())["environment"]["decode_backend"]


class _DeviceBatchFails(DeviceImagePreprocessor):
    """A device decoder that fails whole batches (as an out-of-memory error would)."""

    def decode_batch(self, datas, device=None):
        raise RuntimeError("CUDA out of memory (simulated)")


@pytest.mark.parametrize("failing", [False, True])
def test_encoder_actor_decodes_on_the_device_and_falls_back_per_sample(mixed_corpus, klt_codec, failing):
    """ShardEncoder's device branch in this process (no Ray): bytes in, latents + counted fallbacks out."""
    from pipeline.codec import load
    from pipeline.runtime.decode_stage import ShardDecoder
    from pipeline.runtime.encode_stage import ShardEncoder, decode_counts
    from pipeline.runtime.plan import ShardTask
    from pipeline.sources import open_source

    corpus, files = mixed_corpus
    codec = load(str(klt_codec))
    policy = ImagePolicy(size=SIZE, channels=3, multiple=codec.config.block)
    cls = _DeviceBatchFails if failing else DeviceImagePreprocessor
    pre = cls(policy, spec=DeviceDecodeSpec.for_device("cpu"))
    source = open_source(str(corpus))
    items = tuple(source.list_items())
    decoder = ShardDecoder(source, pre, cache_salt="salt", timeout=30)
    read = decoder(ShardTask(0, 0, items))
    assert read.samples == [] and len(read.raw) + len(read.errors) == len(items)  # bytes only
    encoder = ShardEncoder(codec.freeze(), pre, batch_size=4, cpu_decoder=decoder)
    out = encoder(read)
    encoded, errors = out.samples, out.errors
    assert len(encoded) + len(errors) == len(files)
    counts = decode_counts(encoded)
    if failing:  # every sample went to the CPU path, none lost
        assert counts == {"decoded_on_device": 0, "decode_fallbacks": len(encoded)}
        assert all("device batch failed" in e.meta["decode_fallback"] for e in encoded)
    else:
        assert counts["decoded_on_device"] == 6 and counts["decode_fallbacks"] == len(encoded) - 6
    assert [e.slot for e in encoded] == sorted(e.slot for e in encoded)
    assert {e.stage for e in errors} == {"decode"}
