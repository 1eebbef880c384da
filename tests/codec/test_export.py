"""Edge export of the encoder side: the TorchScript and ONNX graphs reproduce codec.encode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.codec import from_reference, save, wavelets
from pipeline.codec.export import (
    EncoderGraph,
    encoder_macs_per_pixel,
    export_onnx,
    export_torchscript,
    main,
)

ort = pytest.importorskip("onnxruntime")
pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning"),
]

BOUNDARY = 1e-3  # a latent whose continuous value is this close to k + 0.5 may round either way
CONFORMANCE = Path(__file__).parents[1] / "assets" / "conformance"


def load_vector(name: str) -> dict:
    d = torch.load(CONFORMANCE / f"{name}.pt", weights_only=True)
    d["config"] = json.loads(d["config"])
    return d


def _codec(v: dict):
    return from_reference(v["config"], v["state_dict"]).eval()


def _run_onnx(path, x: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"x": x.numpy()})[0])


def assert_same_latents(z: torch.Tensor, expected: torch.Tensor, continuous: torch.Tensor) -> None:
    """Equal except where the continuous latent sits on a rounding boundary (and then by one)."""
    assert z.dtype == torch.int8
    assert z.shape == expected.shape
    on_boundary = ((continuous - continuous.floor()) - 0.5).abs() < BOUNDARY
    mismatch = z != expected
    assert not (mismatch & ~on_boundary).any()
    assert mismatch.float().mean() < 1e-3
    assert (z.int() - expected.int()).abs().max() <= 1


@pytest.mark.parametrize("levels_per_stage", [None, 1, 2, 3])
def test_graph_analysis_is_the_library_transform(vector, levels_per_stage):
    codec, x = _codec(vector), vector["x"]
    graph = EncoderGraph(codec, x.shape, levels_per_stage=levels_per_stage)
    with torch.no_grad():
        X = graph.analysis(x)
    assert X.shape == codec.analysis(x).shape
    assert (X - codec.analysis(x)).abs().max() < 1e-5
    assert (X - vector["wpt"]).abs().max() < 1e-5


def test_graph_equals_encode(vector):
    codec, x = _codec(vector), vector["x"]
    with torch.no_grad():
        z = EncoderGraph(codec, x.shape)(x)
    assert_same_latents(z, codec.encode(x), vector["latent_companded"])


def test_torchscript_equals_encode(vector, tmp_path):
    codec, x = _codec(vector), vector["x"]
    path = export_torchscript(codec, x.shape, tmp_path / "encoder.pt")
    assert path.stat().st_size > 0
    with torch.no_grad():
        z = torch.jit.load(str(path))(x)
    assert_same_latents(z, codec.encode(x), vector["latent_companded"])


def test_onnx_equals_encode(vector, tmp_path):
    codec, x = _codec(vector), vector["x"]
    path = export_onnx(codec, x.shape, tmp_path / "encoder.onnx")
    assert path.stat().st_size > 0
    z = _run_onnx(path, x)
    assert_same_latents(z, codec.encode(x), vector["latent_companded"])


@pytest.mark.parametrize(
    ("name", "shape", "levels_per_stage"),
    [
        ("rgb_light_J3", (1, 3, 61, 77), None),  # reflect padding inside the graph
        ("rgb_light_J3", (2, 3, 5, 3), None),  # replicate padding, an axis shorter than the taps
        ("rgb_light_J3", (1, 3, 32, 48), 1),
        ("stereo_light_J5", (1, 2, 1000), 1),
    ],
)
def test_other_shapes_and_plans(name, shape, levels_per_stage, tmp_path):
    codec = _codec(load_vector(name))
    x = torch.rand(shape) - 0.5
    graph = EncoderGraph(codec, shape, levels_per_stage=levels_per_stage)
    with torch.no_grad():
        continuous = graph.continuous(x)
    expected = codec.encode(x)
    assert_same_latents(_run_onnx(export_onnx(codec, shape, tmp_path / "e.onnx"), x), expected, continuous)
    with torch.no_grad():
        z = torch.jit.load(str(export_torchscript(codec, shape, tmp_path / "e.pt")))(x)
    assert_same_latents(z, expected, continuous)


def test_macs(vector):
    codec, x = _codec(vector), vector["x"]
    macs = encoder_macs_per_pixel(codec, x.shape)
    assert macs["wpt"] > 0 and macs["encoder"] > 0
    assert macs["total"] == pytest.approx(macs["wpt"] + macs["encoder"])
    # the analytic WPT count is what the graph's convolutions do
    graph = EncoderGraph(codec, x.shape)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        graph.analysis(x)
    assert counter.get_total_flops() // 2 == macs["wpt_macs"]


def test_macs_of_the_lightweight_rgb_codec():
    codec = _codec(load_vector("rgb_light_J3"))  # J=3, 3 channels, 192 bands -> 12 latents
    macs = encoder_macs_per_pixel(codec, (1, 3, 256, 256))
    stage = wavelets.stage(3).analysis
    assert macs["wpt"] == 3 * 2 * stage.taps.shape[0] * stage.block  # 3 channels x 2 axes x K*P
    assert macs["encoder"] == 192 * 12 / 64
    fewest = encoder_macs_per_pixel(codec, (1, 3, 256, 256), levels_per_stage=1)
    assert fewest["wpt"] == 3 * 2 * 3 * 10 < macs["wpt"]  # one level at a time: 5 taps of 2 x 2


def test_rejects_bad_shapes():
    codec = _codec(load_vector("rgb_light_J3"))
    with pytest.raises(ValueError, match="channels"):
        EncoderGraph(codec, (1, 1, 64, 64))
    with pytest.raises(ValueError, match="takes"):
        EncoderGraph(codec, (1, 3, 64))


def test_cli(tmp_path, capsys):
    codec = _codec(load_vector("stereo_light_J5"))
    stem = save(codec, tmp_path / "stereo")
    out = tmp_path / "enc.onnx"
    assert main(["--codec", str(stem), "--shape", "1,2,2048", "--format", "onnx", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{out.stat().st_size} bytes" in printed and "MACs per pixel" in printed
    x = torch.rand(1, 2, 2048) - 0.5
    assert (_run_onnx(out, x).int() - codec.encode(x).int()).abs().max() <= 1
    with pytest.raises(SystemExit):
        main(["--codec", str(stem), "--shape", "1,2", "--format", "onnx", "--out", str(out)])
