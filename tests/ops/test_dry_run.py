"""--dry-run: the plan per --mode, worker sizing, size estimate; and it writes nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.codec import CodecConfig, build, save
from pipeline.config import DEFAULT_IMAGE_INPUT, EncodeConfig, RayConfig
from pipeline.manifest import OutputRoot, ShardMarker
from pipeline.runtime.driver import prepare_run, worker_spec
from pipeline.runtime.dry_run import plan_encode
from pipeline.runtime.lease import OutputLease
from pipeline.runtime.plan import chunk, plan_run
from pipeline.runtime.worker import ShardWorker
from pipeline.sinks import SinkSpec

SAMPLES = 24  # images in the bundled sample corpus


@pytest.fixture(scope="module")
def codec_path(tmp_path_factory) -> str:
    codec = build(CodecConfig(kind="2d", channels=3, J=3, latent_dim=12, Nd=32, decoder="linear"))
    return str(save(codec, tmp_path_factory.mktemp("codec") / "small"))


def _cfg(codec_path: str, output: Path, **kw) -> EncodeConfig:
    return EncodeConfig(
        input=DEFAULT_IMAGE_INPUT,
        sink=SinkSpec(output=str(output), shard_size=10),
        codec=codec_path,
        progress=False,
        **kw,
    )


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_fresh_output_plan_and_nothing_written(codec_path: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = plan_encode(_cfg(codec_path, out), resources={"CPU": 16.0})
    assert report.inputs == SAMPLES
    for mode in ("resume", "append", "overwrite"):
        m = report.modes[mode]
        assert (m.encode_shards, m.skip_shards, m.encode_inputs, m.refused) == (3, 0, SAMPLES, None)
    assert (report.workers.encoders, report.workers.threads, report.workers.device) == (16, 1, "cpu")
    assert report.latent_shape == (12, 32, 32)  # 256 px / 2^3, 12 latent channels
    assert report.ok
    assert not out.exists()
    text = report.format_text()
    assert "24 inputs found" in text and "encode 3 shards" in text and "16 encoder actors on cpu" in text


def test_partial_output_resume_skips_committed_and_writes_nothing(codec_path: str, tmp_path: Path) -> None:
    """A run that committed shard 0 and died: resume encodes the other 2, overwrite all 3."""
    out = tmp_path / "out"
    cfg = _cfg(codec_path, out)
    prep = prepare_run(cfg)
    plan_run(prep.root, prep.listing, prep.identity, cfg.sink.shard_size, "resume")  # writes _run.json
    first = chunk(prep.listing, cfg.sink.shard_size, 0, 0)[0]
    stats = {"shard": 0, "name": "shard-000000.tar", "samples": 10, "bytes": 1, "sha256": "x"}
    stats |= {"first_key": None, "last_key": None}
    keys = [it.key for it in first.items]
    prep.root.write_marker(ShardMarker(stats=stats, slot_offset=0, keys=keys))
    before = _snapshot(out)

    report = plan_encode(cfg, resources={"CPU": 4.0})
    resume, append, overwrite = (report.modes[m] for m in ("resume", "append", "overwrite"))
    assert (resume.encode_shards, resume.skip_shards, resume.encode_inputs) == (2, 1, 14)
    assert (append.encode_shards, append.skip_shards, append.encode_inputs) == (2, 1, 14)
    assert (overwrite.encode_shards, overwrite.skip_shards, overwrite.encode_inputs) == (3, 0, SAMPLES)
    assert _snapshot(out) == before  # overwrite's dry run did not clear, append's did not bump appends

    changed = plan_encode(_cfg(codec_path, out, limit=20), resources={"CPU": 4.0})
    assert changed.modes["resume"].refused and "--mode append" in changed.modes["resume"].refused
    assert not changed.ok
    # append: of the first 20 inputs, 10 are committed; the other 10 go into one new shard
    assert (changed.modes["append"].encode_shards, changed.modes["append"].encode_inputs) == (1, 10)
    assert _snapshot(out) == before


def test_gpu_workers_from_cluster_resources(codec_path: str, tmp_path: Path) -> None:
    cfg = _cfg(codec_path, tmp_path / "out", ray=RayConfig(num_gpus_per_worker=1.0))
    report = plan_encode(cfg, resources={"CPU": 64.0, "GPU": 8.0})
    assert (report.workers.encoders, report.workers.device) == (8, "cuda")
    no_gpu = plan_encode(cfg, resources={"CPU": 64.0})
    assert no_gpu.workers.error and "no GPUs" in no_gpu.workers.error
    assert not no_gpu.ok


def test_live_lease_is_reported(codec_path: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    OutputLease(OutputRoot(str(out)), ttl_s=600, owner="busy-host:42:abc").acquire()
    report = plan_encode(_cfg(codec_path, out), resources={"CPU": 2.0})
    assert report.lease_live and not report.ok
    assert "busy-host:42:abc" in report.format_text()


def test_size_estimate_matches_real_shards(codec_path: str, tmp_path: Path) -> None:
    """Run the three stages in-process (no Ray) and compare the bytes written with the estimate."""
    out = tmp_path / "out"
    cfg = _cfg(codec_path, out)
    report = plan_encode(cfg, resources={"CPU": 2.0})
    prep = prepare_run(cfg)
    tasks = chunk(prep.listing, cfg.sink.shard_size, 0, 0)
    worker = ShardWorker(worker_spec(cfg, prep))
    written = [worker.process(t) for t in tasks]
    actual = sum(r.bytes for r in written)
    assert sum(r.written for r in written) == SAMPLES
    assert abs(report.expected_bytes - actual) / actual < 0.10, (report.expected_bytes, actual)


def test_job_dry_run_flag(codec_path: str, tmp_path: Path, capsys) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "encode_imagenet", Path(__file__).resolve().parents[2] / "jobs" / "encode_imagenet.py"
    )
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    out = tmp_path / "out"
    rc = job.main(["--dry-run", "--codec", codec_path, "--output", str(out), "--shard-size", "5"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "DRY RUN" in printed and "encode 5 shards" in printed
    assert f"{os.cpu_count()} CPU" in printed
    assert not out.exists()


def _job(name: str):
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "jobs" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    return job


def test_audio_and_raster_jobs_dry_run_too(tmp_path: Path, capsys) -> None:
    """--dry-run is a common flag: every encode job prints the plan and writes nothing."""
    from pipeline.config import DEFAULT_AUDIO_INPUT

    out = tmp_path / "audio"
    assert _job("encode_audio").main(["--dry-run", "--input", DEFAULT_AUDIO_INPUT, "--output", str(out)]) == 0
    assert "DRY RUN" in capsys.readouterr().out and not out.exists()


def test_a_flag_the_machine_cannot_honour_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    """--decode gpu on a machine without a GPU: a one-line error, exit code 2, nothing written."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "out"
    rc = _job("encode_imagenet").main(["--decode", "gpu", "--output", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: --decode gpu needs a CUDA GPU") and "Traceback" not in err
    assert not (out / "manifest.json").exists()
