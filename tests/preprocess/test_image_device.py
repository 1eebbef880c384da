"""The --decode gpu preprocessing, run on the CPU device: probe, batched decode, EXIF orientation,
resize/crop against the CPU path, determinism, the identity it records, and GPU-vs-CPU latents."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from pipeline.codec import CodecConfig, build
from pipeline.codec.agreement import compare_latents, device_agreement
from pipeline.manifest import stable_hash
from pipeline.preprocess.image import ImagePolicy, ImagePreprocessor, decode_image, to_codec_input
from pipeline.preprocess.image_device import (
    DeviceDecodeSpec,
    DeviceImagePreprocessor,
    Probe,
    available_backend,
    orient,
    probe_jpeg,
    resize_crop,
)

PHOTOS = sorted((Path(__file__).resolve().parents[2] / "pipeline" / "samples" / "images").glob("*/*/*.JPEG"))


def jpeg(img: Image.Image, **kwargs) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90, **kwargs)
    return out.getvalue()


def photo(i: int = 0, size: tuple[int, int] = (120, 90)) -> Image.Image:
    return Image.open(PHOTOS[i]).convert("RGB").resize(size, Image.Resampling.BICUBIC)


def bad_huffman_table(data: bytes) -> bytes:
    """A JPEG whose header reads (size, mode) but whose Huffman table is bogus: decoders fail."""
    i = data.index(b"\xff\xc4")  # DHT: marker, length (2), class/id (1), 16 code counts
    return data[: i + 5] + b"\xff" * 16 + data[i + 21 :]


def device_pre(policy: ImagePolicy) -> DeviceImagePreprocessor:
    return DeviceImagePreprocessor(policy, spec=DeviceDecodeSpec.for_device("cpu"))


def test_cpu_backend_is_torchvision_or_pillow_and_cuda_needs_a_gpu():
    assert available_backend("cpu") in ("torchvision-libjpeg", "pillow")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
            DeviceDecodeSpec.for_device("cuda")
    with pytest.raises(ValueError, match="unknown device decode backend"):
        DeviceDecodeSpec("cpu", "dali")


def test_probe_accepts_baseline_progressive_grey_and_routes_the_rest_to_the_cpu_path():
    policy = ImagePolicy(size=64)
    img = photo()
    assert isinstance(probe_jpeg(jpeg(img), policy), Probe)
    assert isinstance(probe_jpeg(jpeg(img, progressive=True), policy), Probe)
    grey = probe_jpeg(jpeg(img.convert("L")), policy)
    assert isinstance(grey, Probe) and grey.mode == "L"
    png = io.BytesIO()
    img.save(png, "PNG")
    assert probe_jpeg(png.getvalue(), policy) == "not a JPEG"
    assert "CMYK" in probe_jpeg(jpeg(img.convert("CMYK")), policy)
    assert "end-of-image" in probe_jpeg(jpeg(img)[:-400], policy)
    assert "pixel cap" in probe_jpeg(jpeg(img), ImagePolicy(size=64, max_pixels=100))
    assert "1 channels" in probe_jpeg(jpeg(img), ImagePolicy(size=64, channels=1))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(orientation: int):
    pixels = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = orientation
    png = io.BytesIO()
    img.save(png, "PNG", exif=exif.tobytes())
    want = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(png.getvalue()))))
    got = orient(torch.from_numpy(pixels.transpose(2, 0, 1).copy()), orientation).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("size", [64, 256])
def test_device_path_matches_the_cpu_path_within_resampler_rounding(size: int):
    """Same plan (meta), pixels within a few levels: another resampler, no JPEG draft mode."""
    policy = ImagePolicy(size=size, draft=False)  # the CPU path's draft mode is a different image
    datas = [p.read_bytes() for p in PHOTOS[:6]]
    results = device_pre(policy).decode_batch(datas)
    for data, res in zip(datas, results, strict=True):
        cpu = decode_image(data, policy)
        assert res.meta == cpu.meta
        assert res.array.dtype == torch.uint8 and tuple(res.array.shape) == (3, size, size)
        diff = np.abs(res.array.numpy().astype(int) - cpu.array.astype(int))
        assert diff.max() <= 4 and diff.mean() < 0.3, (diff.max(), diff.mean())


def test_exif_rotated_jpeg_gets_the_cpu_paths_plan_and_orientation():
    img = photo(1, (120, 80))
    exif = img.getexif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    data = jpeg(img, exif=exif.tobytes())
    policy = ImagePolicy(size=None, crop="none")  # no resampling: pixels compare exactly
    (res,) = device_pre(policy).decode_batch([data])
    cpu = decode_image(data, policy)
    assert res.meta == cpu.meta and res.meta["original_size"] == [80, 120]
    np.testing.assert_array_equal(res.array.numpy(), cpu.array)


def test_batched_resize_equals_one_by_one_and_is_deterministic():
    policy = ImagePolicy(size=48)
    images = [torch.from_numpy(np.asarray(photo(i, s)).transpose(2, 0, 1).copy()) for i, s in
              enumerate([(120, 90), (120, 90), (90, 120), (60, 40)])]  # fmt: skip
    batched = resize_crop(images, policy)
    single = [resize_crop([im], policy)[0] for im in images]
    again = resize_crop(images, policy)
    for a, b, c in zip(batched, single, again, strict=True):
        assert tuple(a.shape) == (3, 48, 48)
        assert torch.equal(a, b) and torch.equal(a, c)


def test_broken_and_refused_inputs_come_back_as_reasons_never_raise():
    policy = ImagePolicy(size=32)
    good = jpeg(photo())
    broken = bad_huffman_table(good)
    png = io.BytesIO()
    photo().save(png, "PNG")
    results = device_pre(policy).decode_batch([good, broken, png.getvalue(), good])
    assert not isinstance(results[0], str) and not isinstance(results[3], str)
    assert torch.equal(results[0].array, results[3].array)
    assert isinstance(results[1], str) and "device decoder refused" in results[1]
    assert results[2] == "not a JPEG"


def test_identity_records_backend_and_resize_so_the_settings_hash_changes():
    policy = ImagePolicy(size=64)
    cpu, dev = ImagePreprocessor(policy), device_pre(policy)
    d = dev.to_dict()
    assert d["decode"]["backend"] == available_backend("cpu") and "interpolate" in d["decode"]["resize"]
    assert {k: v for k, v in d.items() if k != "decode"} == cpu.to_dict()
    assert "decode" not in cpu.to_dict()  # CPU runs keep the settings hash they always had
    other = DeviceImagePreprocessor(policy, spec=DeviceDecodeSpec("cpu", "torchvision-libjpeg"))
    hashes = {stable_hash(p.to_dict()) for p in (cpu, dev, other)}
    assert len(hashes) == 3


def test_codec_input_of_device_tensors_equals_the_numpy_path():
    pixels = np.random.default_rng(0).integers(0, 256, (2, 3, 16, 16), dtype=np.uint8)
    got = device_pre(ImagePolicy(size=16)).codec_input(torch.from_numpy(pixels))
    np.testing.assert_array_equal(got.numpy(), to_codec_input(pixels))


def test_latents_of_the_device_path_equal_the_cpu_encoder_on_the_same_pixels():
    """GPU-vs-CPU agreement, here cpu vs cpu through the device code (the benchmark runs it on GPU)."""
    torch.manual_seed(0)
    codec = build(CodecConfig(kind="2d", channels=3, J=3, latent_dim=12, Nd=32, decoder="linear")).eval()
    with torch.no_grad():  # spread the latents over the int8 range, so agreement means something
        codec.encoder.weight.mul_(40.0)
    datas = [p.read_bytes() for p in PHOTOS[:4]]
    pixels = torch.stack([r.array for r in device_pre(ImagePolicy(size=64)).decode_batch(datas)])
    x = device_pre(ImagePolicy(size=64)).codec_input(pixels)
    agreement = device_agreement(codec, x, device="cpu")
    print("device-vs-cpu latents:", agreement.format())
    assert agreement.latents == 4 * 12 * 8 * 8
    assert agreement.other_mismatches == 0 and agreement.mismatch_rate < 1e-4
    z = codec.encode(x)
    assert len(torch.unique(z)) > 20  # the comparison covers many latent values
    off = z.clone()
    off[0, 0, 0, 0] += 1
    flagged = compare_latents(z, off, codec.compander.to_uniform(codec.encode_continuous(codec.pad(x))))
    assert flagged.mismatches == 1 and flagged.max_abs_diff == 1


def _variants() -> dict[str, bytes]:
    img = photo(2, (64, 48))
    out = {"plain": jpeg(img), "progressive": jpeg(img, progressive=True), "grey": jpeg(img.convert("L"))}
    out["cmyk"] = jpeg(img.convert("CMYK"))
    out["real photo"] = PHOTOS[0].read_bytes()
    for o in (1, 3, 6, 8):
        exif = img.getexif()
        exif[0x0112] = o
        exif[0x010F] = "maker"  # another tag first in the IFD
        out[f"exif {o}"] = jpeg(img, exif=exif.tobytes())
    out["xmp orientation"] = jpeg(img, xmp=b"<x:xmpmeta><tiff:Orientation>6</tiff:Orientation></x:xmpmeta>")
    return out


def test_fast_header_reader_agrees_with_pillows():
    from pipeline.preprocess.image_device import _pillow_probe

    policy = ImagePolicy(size=64)
    for name, data in _variants().items():
        assert probe_jpeg(data, policy) == _pillow_probe(data, policy), name
    assert probe_jpeg(_variants()["xmp orientation"], policy).orientation == 6
