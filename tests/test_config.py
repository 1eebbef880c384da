"""EncodeConfig: nested frozen parts, each checked when made, a JSON round trip, and the jobs' flag
defaults taken from it (pipeline/config.py)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pipeline.config import (
    DEFAULT_AUDIO_CODEC,
    DEFAULT_AUDIO_INPUT,
    DEFAULT_IMAGE_CODEC,
    DEFAULT_IMAGE_INPUT,
    AudioSettings,
    EncodeConfig,
    ImageSettings,
    RasterSettings,
    RayConfig,
)
from pipeline.sinks import SinkSpec


def _everything_changed() -> EncodeConfig:
    """A config whose every field differs from its default."""
    return EncodeConfig(
        input="s3://bucket/in",
        sink=SinkSpec(
            output="s3://bucket/out",
            format="webdataset",
            latent_format="zstd",
            shard_size=7,
            storage_options={"anon": True},
            flip_pair=True,
        ),
        source="image-folder",
        source_options={"labels": "none"},
        codec="rgb-16x",
        mode="append",
        limit=5,
        image=ImageSettings(size=128, crop="center", buckets="area=65536:ratios=1:1,4:3"),
        audio=AudioSettings(window=4096, hop=1024, sample_rate=22050, channel_policy="downmix"),
        raster=RasterSettings(value_range=(0.0, 10000.0)),
        ray=RayConfig(
            address="head:6379",
            workers=3,
            num_gpus_per_worker=0.5,
            batch_size=8,
            batch_pixels=1000,
            decode="gpu",
            decode_device="cpu",
            sample_timeout_s=5.0,
        ),
        progress=False,
    )


def test_round_trip_through_json():
    cfg = _everything_changed()
    assert EncodeConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    default = EncodeConfig(input="in", sink=SinkSpec(output="out"))
    assert EncodeConfig.from_dict(json.loads(json.dumps(default.to_dict()))) == default
    assert EncodeConfig.from_dict({"input": "in", "sink": {"output": "out"}}) == default  # parts default
    # every field of every part is in the dict: nothing is lost on the way
    d = cfg.to_dict()
    for name, part in (("sink", cfg.sink), ("image", cfg.image), ("audio", cfg.audio), ("ray", cfg.ray)):
        assert set(d[name]) == {f.name for f in dataclasses.fields(part)}
    assert set(d) == {f.name for f in dataclasses.fields(EncodeConfig)}


@pytest.mark.parametrize(
    ("d", "message"),
    [
        ({"input": "in", "sink": {"output": "out"}, "size": 64}, r"unknown encode config keys: \['size'\]"),
        ({"input": "in", "sink": {"output": "out"}, "image": {"sise": 64}}, r"unknown image keys"),
        ({"input": "in", "sink": {"output": "out", "shards": 3}}, r"unknown sink keys"),
        ({"input": "in", "sink": {"output": "out"}, "ray": {"gpus": 1}}, r"unknown ray keys"),
        ({"input": "in"}, r"needs a sink"),
        ({"input": "in", "sink": {"output": "out"}, "audio": [1]}, r"audio: expected a mapping"),
    ],
)
def test_from_dict_refuses_what_it_does_not_know(d, message):
    with pytest.raises(ValueError, match=message):
        EncodeConfig.from_dict(d)


SINK = SinkSpec(output="out")
BAD = [
    (lambda: SinkSpec(output=""), "--output"),
    (lambda: SinkSpec(output="o", shard_size=0), "--shard-size"),
    (lambda: SinkSpec(output="o", shard_size=2.5), "--shard-size"),
    (lambda: SinkSpec(output="o", format="tar"), "unknown format 'tar'"),
    (lambda: SinkSpec(output="o", latent_format="zsdt"), "--latent-format"),
    (lambda: SinkSpec(output="o", format="zarr", latent_format="zstd"), "--format zarr stores int8"),
    (lambda: ImageSettings(size=0), "--size"),
    (lambda: ImageSettings(crop="left"), "--crop"),
    (lambda: ImageSettings(buckets="256x256", crop="none"), "--buckets"),
    (lambda: ImageSettings(buckets="wide"), "--buckets"),
    (lambda: AudioSettings(window=0), "--window"),
    (lambda: AudioSettings(window=2.5), "--window"),
    (lambda: AudioSettings(hop=0), "--hop"),
    (lambda: AudioSettings(sample_rate=-1), "--sample-rate"),
    (lambda: AudioSettings(channel_policy="mix"), "--channel-policy"),
    (lambda: RasterSettings(value_range=(1.0, 1.0)), "--range"),
    (lambda: RasterSettings(value_range=(0.0, float("inf"))), "--range"),
    (lambda: RayConfig(workers=0), "--workers"),
    (lambda: RayConfig(num_gpus_per_worker=-1.0), "--num-gpus-per-worker"),
    (lambda: RayConfig(batch_size=0), "--batch-size"),
    (lambda: RayConfig(batch_pixels=0), "--batch-pixels"),
    (lambda: RayConfig(decode="tpu"), "--decode"),
    (lambda: RayConfig(decode_device="cpu"), "decode_device"),
    (lambda: RayConfig(sample_timeout_s=0.0), "--sample-timeout"),
    (lambda: EncodeConfig(input="", sink=SINK), "--input"),
    (lambda: EncodeConfig(input="i", sink=SINK, source="nosuch"), "--source"),
    (lambda: EncodeConfig(input="i", sink=SINK, mode="replace"), "--mode"),
    (lambda: EncodeConfig(input="i", sink=SINK, codec=""), "--codec"),
    (lambda: EncodeConfig(input="i", sink=SINK, limit=0), "--limit"),
]


@pytest.mark.parametrize(("make", "flag"), BAD, ids=[f"{i}:{flag}" for i, (_, flag) in enumerate(BAD)])
def test_each_part_refuses_a_bad_value_naming_the_flag(make, flag):
    with pytest.raises(ValueError, match=flag):
        make()


def test_the_parts_are_typed_and_frozen():
    with pytest.raises(TypeError, match="EncodeConfig.image must be a ImageSettings"):
        EncodeConfig(input="i", sink=SINK, image={"size": 64})
    cfg = EncodeConfig(input="i", sink=SINK)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.image.size = 64  # type: ignore[misc]
    assert cfg.output == "out" and cfg.policies() == {
        "image": cfg.image,
        "audio": cfg.audio,
        "raster": cfg.raster,
    }


def _job_config(job: str, argv: list[str], monkeypatch) -> EncodeConfig:
    """The config a job's main() hands to the run (run_encode_job replaced by a recorder)."""
    import importlib

    module = importlib.import_module(f"pipeline.jobs.{job}")
    seen: list[EncodeConfig] = []
    monkeypatch.setattr(module, "run_encode_job", lambda cfg, dry_run=False: seen.append(cfg) or 0)
    assert module.main(argv) == 0
    (cfg,) = seen
    return cfg


@pytest.mark.parametrize(
    ("job", "argv", "expected"),
    [
        (
            "encode_imagenet",
            [],
            EncodeConfig(
                input=DEFAULT_IMAGE_INPUT, sink=SinkSpec(output="out/samples-wds"), codec=DEFAULT_IMAGE_CODEC
            ),
        ),
        (
            "encode_audio",
            [],
            EncodeConfig(
                input=DEFAULT_AUDIO_INPUT, sink=SinkSpec(output="out/audio-wds"), codec=DEFAULT_AUDIO_CODEC
            ),
        ),
        (
            "encode_raster",
            ["--input", DEFAULT_IMAGE_INPUT, "--codec", DEFAULT_IMAGE_CODEC],
            EncodeConfig(
                input=DEFAULT_IMAGE_INPUT, sink=SinkSpec(output="out/raster-wds"), codec=DEFAULT_IMAGE_CODEC
            ),
        ),
    ],
)
def test_a_job_without_flags_runs_the_config_defaults(job, argv, expected, monkeypatch):
    """The flags' defaults are the dataclasses' own (written once, in pipeline/config.py)."""
    assert _job_config(job, argv, monkeypatch) == expected


def test_job_flags_land_in_their_part(monkeypatch):
    cfg = _job_config(
        "encode_audio",
        [
            "--window",
            "4096",
            "--hop",
            "1024",
            "--channel-policy",
            "downmix",
            "--shard-size",
            "9",
            "--workers",
            "2",
        ],
        monkeypatch,
    )
    assert cfg.audio == AudioSettings(window=4096, hop=1024, channel_policy="downmix")
    assert (cfg.sink.shard_size, cfg.ray.workers, cfg.image) == (9, 2, ImageSettings())
    cfg = _job_config(
        "encode_raster",
        ["--input", DEFAULT_IMAGE_INPUT, "--codec", DEFAULT_IMAGE_CODEC, "--size", "0", "--range", "0,255"],
        monkeypatch,
    )
    assert (cfg.image.size, cfg.raster.value_range) == (None, (0.0, 255.0))
    cfg = _job_config(
        "encode_imagenet", ["--crop", "none", "--flip-pair", "--latent-format", "zstd"], monkeypatch
    )
    assert (cfg.image.crop, cfg.sink.flip_pair, cfg.sink.latent_format) == ("none", True, "zstd")
