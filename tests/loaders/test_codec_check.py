"""RunInfo.codec and check_compatible accept a codec with the writer's encoder (another decoder) and
refuse another encoder, from the manifest's encoder hash or, in older manifests, the codec it names."""

from __future__ import annotations

import copy

import pytest
import synth
import torch

from pipeline.codec import load
from pipeline.loaders import CodecMismatchError, RunInfo
from pipeline.loaders.common import MixedRunsError, check_compatible
from pipeline.manifest import OutputRoot


def _run(root, codec_info: dict):
    """A run built by hand whose manifest's codec section is `codec_info`."""
    klt = load("rgb-16x-klt")
    samples = synth.make_samples(4)
    synth.write_run(root, samples, codec_hash=klt.hash)
    out = OutputRoot(str(root))
    manifest = out.read_json("manifest.json")
    manifest["codec"] = codec_info
    out.write_manifest(manifest)
    return RunInfo.open(str(root))


def _other_encoder(tmp_path) -> str:
    from pipeline.codec import save

    other = copy.deepcopy(load("rgb-16x-klt"))
    with torch.no_grad():
        other.encoder.bias.add_(1e-3)
    return str(save(other, tmp_path / "other"))


def test_a_klt_run_decodes_with_rgb16x(tmp_path):
    klt = load("rgb-16x-klt")
    info = _run(tmp_path / "run", klt.identity())
    assert info.encoder_hash == klt.encoder_hash
    assert info.codec().hash == klt.hash  # the codec it names
    assert info.codec("rgb-16x").hash == load("rgb-16x").hash
    with pytest.raises(CodecMismatchError, match=r"written by codec \w+ \(encoder"):
        info.codec(_other_encoder(tmp_path))


def test_older_manifests_resolve_the_encoder_through_the_named_codec(tmp_path):
    klt = load("rgb-16x-klt")
    old = {"name": "rgb-16x-klt", "hash": klt.hash, "config": klt.config.to_dict()}
    info = _run(tmp_path / "old", old)
    assert info.encoder_hash is None
    assert info.codec("rgb-16x").name == "rgb-16x"
    with pytest.raises(CodecMismatchError):
        info.codec(_other_encoder(tmp_path))
    gone = _run(tmp_path / "gone", old | {"name": str(tmp_path / "no-such-codec.json")})
    with pytest.raises(CodecMismatchError):  # the named codec is not there: the full hash only
        gone.codec("rgb-16x")
    nameless = _run(tmp_path / "nameless", old | {"name": None})
    with pytest.raises(CodecMismatchError):  # nothing says which encoder wrote it: the full hash only
        nameless.codec("rgb-16x")


def test_runs_of_one_encoder_mix(tmp_path):
    klt, deep = load("rgb-16x-klt"), load("rgb-16x")
    a = _run(tmp_path / "a", klt.identity())
    b = _run(tmp_path / "b", deep.identity())
    check_compatible([a, b])
    other = load(_other_encoder(tmp_path))
    c = _run(tmp_path / "c", other.identity())
    with pytest.raises(MixedRunsError, match="codec hash"):
        check_compatible([a, c])
