"""Every job refuses a user's mistake in a flag before it starts Ray or writes anything: one line on
stderr, `error: --flag: what is wrong; accepted: ...`, exit code 2, no traceback.

The table runs each job's main(argv) in this process (fast: most cases fail while parsing, before
torch or Ray are imported); test_flag_errors_import_no_ray runs the whole table again in a fresh
interpreter to prove that no case imported Ray, and that the cases that do not need the codec
package did not import torch either."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import DEFAULT_AUDIO_INPUT, DEFAULT_IMAGE_INPUT

ROOT = Path(__file__).resolve().parents[2]
OUT = "{out}"  # replaced by a fresh path per case: it must not exist afterwards
MISSING = "/nonexistent/walloc-input"
IMG, AUD = DEFAULT_IMAGE_INPUT, DEFAULT_AUDIO_INPUT
TRAIN = ["--kind", "2d", "--data", IMG, "--out", OUT]  # train_codec's required flags
RASTER = ["--input", IMG, "--codec", "rgb-16x-klt"]
MUSDB = ["--input", AUD, "--source", "musdb"]

# (job, argv, the flag the line must name, heavy: the case may import the codec package / torch)
CASES: list[tuple[str, list[str], str, bool]] = [
    # the table
    ("encode_imagenet", ["--input", MISSING], "--input", False),
    ("encode_imagenet", ["--codec", "nosuch"], "--codec", True),
    ("encode_imagenet", ["--shard-size", "0"], "--shard-size", False),
    ("encode_imagenet", ["--latent-format", "zsdt"], "--latent-format", True),
    ("encode_imagenet", ["--extensions", ","], "--extensions", False),
    ("encode_imagenet", ["--size", "-5"], "--size", False),
    # inputs and outputs
    ("encode_imagenet", ["--input", "{empty}"], "--input", False),
    ("encode_imagenet", ["--input", "{empty}/shard-{000..003}.tar"], "--input", False),
    ("encode_imagenet", ["--input", ""], "--input", False),
    ("encode_imagenet", ["--output", "{file}"], "--output", False),
    ("encode_imagenet", ["--input", "{empty}", "--output", "{empty}"], "--input", False),
    ("encode_imagenet", ["--codec", "{empty}/codec.json"], "--codec", True),
    ("encode_imagenet", ["--codec", "{empty}/ref.pth"], "--codec", True),
    ("encode_imagenet", ["--codec", "{notacodec}"], "--codec", True),  # a .json that is no codec's
    ("encode_imagenet", ["--codec", "{notacodec}.json"], "--codec", True),
    # choices
    ("encode_imagenet", ["--format", "tar"], "--format", False),
    ("encode_imagenet", ["--mode", "merge"], "--mode", False),
    ("encode_imagenet", ["--source", "nosuch"], "--source", False),
    ("encode_imagenet", ["--decode", "tpu"], "--decode", False),
    ("encode_imagenet", ["--crop", "square"], "--crop", False),
    ("encode_imagenet", ["--source-option", "no-equals"], "--source-option", False),
    ("encode_imagenet", ["--source-option", "bogus=1"], "--source-option", False),
    ("encode_audio", [*MUSDB, "--source-option", "x=1"], "--source-option", False),
    # numbers
    ("encode_imagenet", ["--shard-size", "ten"], "--shard-size", False),
    ("encode_imagenet", ["--limit", "0"], "--limit", False),
    ("encode_imagenet", ["--batch-size", "-1"], "--batch-size", False),
    ("encode_imagenet", ["--batch-pixels", "0"], "--batch-pixels", False),
    ("encode_imagenet", ["--workers", "0"], "--workers", False),
    ("encode_imagenet", ["--num-gpus-per-worker", "-0.5"], "--num-gpus-per-worker", False),
    ("encode_imagenet", ["--sample-timeout", "0"], "--sample-timeout", False),
    ("encode_imagenet", ["--sample-timeout", "nan"], "--sample-timeout", False),
    ("encode_imagenet", ["--size", "1.5"], "--size", False),
    # conflicts and forms
    ("encode_imagenet", ["--format", "zarr", "--latent-format", "zstd"], "--latent-format", True),
    ("encode_imagenet", ["--format", "zarr", "--crop", "none"], "--crop", False),
    ("encode_imagenet", ["--format", "zarr", "--size", "0"], "--size", False),
    ("encode_raster", [*RASTER, "--format", "zarr", "--crop", "none"], "--crop", False),
    ("encode_imagenet", ["--buckets", "256x256", "--crop", "none"], "--buckets", False),
    ("encode_imagenet", ["--buckets", "256xabc"], "--buckets", False),
    ("encode_imagenet", ["--address", "not an address"], "--address", False),
    ("encode_imagenet", ["--codec", "stereo-44k-klt"], "--codec", True),  # an audio codec for images
    ("encode_imagenet", ["--buckets", "100x100"], "--buckets", True),  # not multiples of 2^J = 8
    ("encode_imagenet", ["--no-such-flag"], "--no-such-flag", False),
    # audio
    ("encode_audio", ["--input", AUD, "--window", "0"], "--window", False),
    ("encode_audio", ["--input", AUD, "--hop", "-1"], "--hop", False),
    ("encode_audio", ["--input", AUD, "--sample-rate", "0"], "--sample-rate", False),
    ("encode_audio", ["--input", AUD, "--channel-policy", "mix"], "--channel-policy", False),
    ("encode_audio", ["--input", MISSING], "--input", False),
    ("encode_audio", ["--input", AUD, "--codec", "nosuch"], "--codec", True),
    ("encode_audio", ["--input", AUD, "--codec", "rgb-16x-klt"], "--codec", True),
    ("encode_audio", ["--input", AUD, "--decode", "gpu"], "--decode", False),
    # rasters
    ("encode_raster", ["--input", IMG], "--codec", False),
    ("encode_raster", [*RASTER, "--range", "5,1"], "--range", False),
    ("encode_raster", [*RASTER, "--range", "a,b"], "--range", False),
    ("encode_raster", [*RASTER, "--size", "-1"], "--size", False),
    ("encode_raster", [*RASTER, "--decode", "gpu"], "--decode", False),
    ("encode_raster", ["--input", MISSING, "--codec", "rgb-16x-klt"], "--input", False),
    # codec training
    ("train_codec", ["--data", IMG, "--out", OUT], "--kind", True),
    ("train_codec", ["--kind", "3d", "--data", IMG, "--out", OUT], "--kind", True),
    ("train_codec", ["--kind", "2d", "--data", MISSING, "--out", OUT], "--data", True),
    ("train_codec", ["--kind", "2d", "--data", IMG, "--out", "{empty}"], "--out", True),
    ("train_codec", [*TRAIN, "--J", "0"], "--J", True),
    ("train_codec", [*TRAIN, "--latent-bits", "9"], "--latent-bits", True),
    ("train_codec", [*TRAIN, "--valid-fraction", "1"], "--valid-fraction", True),
    ("train_codec", [*TRAIN, "--steps", "-1"], "--steps", True),
    ("train_codec", [*TRAIN, "--lr", "0"], "--lr", True),
    ("train_codec", [*TRAIN, "--device", "tpu"], "--device", True),
    ("train_codec", [*TRAIN, "--no-lightweight"], "--no-lightweight", True),
    ("train_codec", [*TRAIN, "--post-filter"], "--post-filter", True),
    ("train_codec", [*TRAIN, "--kind", "1d", "--latent-dim", "108", "--Nd", "128"], "--Nd", True),
    ("train_codec", [*TRAIN, "--init-codec", "nosuch"], "--init-codec", True),
    ("train_codec", [*TRAIN, "--address", "x y"], "--address", True),
    ("train_codec", [*TRAIN, "--schedule", "step"], "--schedule", True),
    ("train_codec", [*TRAIN, "--lr-floor", "2"], "--lr-floor", True),
    ("train_codec", [*TRAIN, "--stop-at", "0"], "--stop-at", True),
    ("train_codec", [*TRAIN, "--stop-at", "5", "--workers", "2"], "--stop-at", True),
    # the rate-distortion report
    ("evaluate_codec", ["--out", OUT, "--image-codecs", "nosuch"], "--image-codecs", True),
    ("evaluate_codec", ["--out", OUT, "--audio-codecs", "nosuch.json"], "--audio-codecs", True),
    ("evaluate_codec", ["--out", OUT, "--audio-length", "0"], "--audio-length", False),
    ("evaluate_codec", ["--out", OUT, "--audio-codecs", "rgb-16x"], "--audio-codecs", True),
    ("evaluate_codec", ["--out", "{file}"], "--out", True),
    # learning jobs
    ("learn_classify", ["--images", MISSING, "--output", OUT], "--images", False),
    ("learn_classify", ["--latents", MISSING, "--output", OUT], "--latents", False),
    ("learn_classify", ["--images", IMG, "--output", OUT, "--epochs", "0"], "--epochs", False),
    ("learn_classify", ["--images", IMG, "--output", OUT, "--codec", "nosuch"], "--codec", True),
    ("learn_classify", ["--images", IMG, "--output", OUT, "--device", "tpu"], "--device", False),
    ("learn_classify", ["--images", IMG, "--output", OUT, "--arms", "jpeg"], "--arms", False),
    ("learn_classify", ["--images", IMG, "--output", OUT, "--seeds", "0"], "--seeds", False),
    ("learn_classify", ["--images", IMG, "--output", OUT, "--dropout", "1"], "--dropout", False),
    ("learn_colorize", ["--images", MISSING, "--output", OUT], "--images", False),
    ("learn_colorize", ["--images", IMG, "--output", OUT, "--val-samples", "0"], "--val-samples", False),
    ("learn_colorize", ["--images", IMG, "--output", OUT, "--samples", "1000"], "--images", False),
    ("learn_colorize", ["--images", IMG, "--output", OUT, "--arms", "jpeg"], "--arms", False),
    ("learn_colorize", ["--images", IMG, "--output", OUT, "--seeds", "0"], "--seeds", False),
    ("learn_ocr", ["--output", OUT, "--samples", "0"], "--samples", False),
    ("learn_ocr", ["--output", OUT, "--threads", "-1"], "--threads", False),
    ("learn_ocr", ["--output", OUT, "--lr", "-1"], "--lr", False),
    ("learn_ocr", ["--output", "{file}"], "--output", True),
    ("learn_documents", ["--documents", MISSING, "--output", OUT], "--documents", False),
    ("learn_documents", ["--documents", IMG, "--output", OUT, "--seeds", "0,0"], "--seeds", False),
    ("learn_documents", ["--documents", IMG, "--output", OUT, "--seeds", "a"], "--seeds", False),
    ("learn_documents", ["--documents", IMG, "--output", OUT, "--scale", "0"], "--scale", False),
    ("learn_documents", ["--documents", IMG, "--output", OUT, "--dropout", "1"], "--dropout", False),
    ("learn_documents", ["--documents", IMG, "--output", OUT, "--weight-decay", "-1"], "--weight-decay", False),  # noqa: E501
    ("learn_separate", ["--stems", MISSING, "--output", OUT], "--stems", True),
    ("learn_separate", ["--stems", AUD, "--output", OUT, "--codec", "rgb-16x-klt"], "--codec", True),
    ("learn_separate", ["--stems", AUD, "--output", OUT, "--window", "0"], "--window", True),
    ("learn_separate", ["--stems", AUD, "--output", OUT, "--eval-every", "0"], "--eval-every", True),
]  # fmt: skip
JOBS = sorted({job for job, *_ in CASES})


def _argv(job: str, argv: list[str], tmp: Path) -> tuple[list[str], Path]:
    """The case's argv with {empty}/{file}/{out}/{notacodec} filled in, plus --output where the job
    has one and the case gives none; returns the path that must not exist afterwards."""
    empty, afile, out, notacodec = tmp / "empty", tmp / "a-file", tmp / "out", tmp / "notacodec"
    empty.mkdir(exist_ok=True)
    afile.write_text("not a folder")
    Path(f"{notacodec}.json").write_text(json.dumps({"format": "something-else/1"}))
    Path(f"{notacodec}.safetensors").write_bytes(b"\0" * 16)
    slots = {"{empty}": str(empty), "{file}": str(afile), "{out}": str(out), "{notacodec}": str(notacodec)}
    filled = []
    for a in argv:
        for slot, value in slots.items():
            a = a.replace(slot, value)
        filled.append(a)
    if job.startswith("encode_") and "--output" not in argv:
        filled += ["--output", str(out)]
    return filled, out


def run_case(job: str, argv: list[str], tmp: Path, capsys) -> tuple[int, list[str], Path]:
    """main(argv) in this process: (exit code, stderr lines, the output path)."""
    module = importlib.import_module(f"pipeline.jobs.{job}")
    filled, out = _argv(job, argv, tmp)
    capsys.readouterr()
    try:
        code = module.main(filled)
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err.splitlines(), out


@pytest.mark.parametrize(
    ("job", "argv", "flag", "heavy"), CASES, ids=[f"{c[0]}:{' '.join(c[1])}" for c in CASES]
)
def test_a_bad_flag_is_one_line_and_exit_2(job, argv, flag, heavy, tmp_path, capsys) -> None:
    ray = sys.modules.get("ray")
    ray_was_up = ray is not None and ray.is_initialized()
    code, lines, out = run_case(job, argv, tmp_path, capsys)
    assert code == 2, (code, lines)
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("error: ") and flag in line, line
    if not line.startswith(("error: unrecognized", "error: the following arguments are required")):
        assert line.startswith(f"error: {flag}: "), line  # the flag first, then what is wrong
    assert "Traceback" not in line
    assert not out.exists(), f"{out} was created"
    ray = sys.modules.get("ray")
    assert ray_was_up or ray is None or not ray.is_initialized(), "Ray was started"


def test_accepted_values_are_listed(tmp_path, capsys) -> None:
    """A choice or a range says what it accepts; the latent formats come from the entropy registry."""
    from pipeline.codec.entropy import METHODS

    _, (line,), _ = run_case("encode_imagenet", ["--latent-format", "zsdt"], tmp_path, capsys)
    assert line.endswith("accepted: " + ", ".join(["npy", *sorted(METHODS)])), line
    _, (line,), _ = run_case("encode_imagenet", ["--format", "tar"], tmp_path, capsys)
    assert line == "error: --format: got 'tar'; accepted: webdataset, zarr", line
    _, (line,), _ = run_case("encode_imagenet", ["--shard-size", "0"], tmp_path, capsys)
    assert line == "error: --shard-size: got 0; accepted: a whole number >= 1", line
    _, (line,), _ = run_case("encode_imagenet", ["--codec", "nosuch"], tmp_path, capsys)
    assert "rgb-16x-klt" in line.split("accepted: ")[1], line


@pytest.mark.parametrize("job", JOBS)
def test_every_job_explains_its_flags(job: str) -> None:
    """--help still works for every job, and every option says something about itself."""
    parser = importlib.import_module(f"pipeline.jobs.{job}").build_parser()
    text = parser.format_help()
    assert "options:" in text
    for action in parser._actions:
        assert action.help, f"{job}: {action.option_strings} has no help"


def test_a_wrapper_runs_from_a_bare_checkout() -> None:
    """jobs/*.py find the package next to them (no install, no PYTHONPATH), as `ray job submit
    --working-dir .` runs them."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-I", str(ROOT / "jobs" / "evaluate_codec.py"), "--audio-length", "0"],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: --audio-length: "), proc.stderr


def test_every_job_is_in_the_table() -> None:
    from pipeline.jobs import COMMANDS

    assert set(JOBS) == set(COMMANDS)
    assert {p.stem for p in (ROOT / "jobs").glob("*.py")} == set(COMMANDS)


def test_a_config_refused_by_encode_config_is_a_flag_error(capsys) -> None:
    """EncodeConfig's own checks (the last line of defence) are reported as flag errors too."""
    from pipeline.cli import encode_config
    from pipeline.jobs.encode_imagenet import build_parser

    parser = build_parser()
    args = parser.parse_args(["--output", "out/x"])
    args.shard_size = 0  # what validation would have refused
    with pytest.raises(SystemExit) as exit_:
        encode_config(parser, args)
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: --shard-size"), line


def test_a_codec_file_that_does_not_load_is_one_line(ray_session, tmp_path, capsys) -> None:
    """A codec pair whose .json is fine (so the flag checks accept it) but whose weights were changed:
    only loading finds that (the content hash), in the run (which may have started Ray by then: the
    session's, so that no other Ray is left running); still one line naming --codec, exit 2, no
    manifest."""
    from pipeline.codec import zoo

    stem = tmp_path / "tampered"
    (tmp_path / "tampered.json").write_bytes((zoo.BUNDLED_DIR / "rgb-16x-klt.json").read_bytes())
    weights = bytearray((zoo.BUNDLED_DIR / "rgb-16x-klt.safetensors").read_bytes())
    weights[-1] ^= 0x01  # one bit of the last weight
    (tmp_path / "tampered.safetensors").write_bytes(bytes(weights))
    out = tmp_path / "out"
    module = importlib.import_module("pipeline.jobs.encode_imagenet")
    capsys.readouterr()
    code = module.main(["--codec", str(stem), "--output", str(out), "--no-progress"])
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: --codec: "), lines
    assert not (out / "manifest.json").exists()


def test_valid_flags_still_parse() -> None:
    """The checks refuse only mistakes: defaults, URLs (not probed) and brace patterns of existing
    files pass."""
    from pipeline.cli import validate_encode_args
    from pipeline.jobs.encode_imagenet import build_parser

    parser = build_parser()
    validate_encode_args(parser.parse_args(["--size", "0", "--limit", "3", "--latent-format", "zstd"]))
    validate_encode_args(parser.parse_args(["--input", "s3://bucket/imagenet/train", "--output", "s3://b/o"]))
    validate_encode_args(parser.parse_args(["--address", "ray://head:10001", "--num-gpus-per-worker", "0.5"]))
    args = parser.parse_args(["--buckets", "area=65536:ratios=1:1,4:3", "--flip-pair"])
    validate_encode_args(args)
    assert isinstance(args, argparse.Namespace)


def test_flag_errors_import_no_ray(tmp_path) -> None:
    """The table in a fresh interpreter: no case imports Ray; the light cases (run first) not even
    torch."""
    cases = sorted(CASES, key=lambda c: c[3])  # light first
    script = f"""
import contextlib, importlib, io, json, sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_job_flags import _argv
results = []
for job, argv, flag, heavy in {cases!r}:
    tmp = Path({str(tmp_path)!r}) / str(len(results))
    tmp.mkdir()
    filled, out = _argv(job, argv, tmp)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = importlib.import_module("pipeline.jobs." + job).main(filled)
        except SystemExit as e:
            code = e.code
    results.append([job, argv, heavy, code, err.getvalue(), "torch" in sys.modules, "ray" in sys.modules])
print(json.dumps(results))
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job, argv, heavy, code, err, torch_loaded, ray_loaded in json.loads(proc.stdout.splitlines()[-1]):
        assert code == 2 and len(err.splitlines()) == 1, (job, argv, code, err)
        assert not ray_loaded, (job, argv, "imported ray")
        assert heavy or not torch_loaded, (job, argv, "imported torch")


def test_the_default_elpv_folder_missing_says_how_to_fetch_it(tmp_path, capsys, monkeypatch) -> None:
    """learn_classify's default data (data/elpv-binary) is fetched, not bundled: without it, one line
    that names the script, before anything is encoded or written."""
    monkeypatch.chdir(tmp_path)  # no data/ here
    code, lines, out = run_case("learn_classify", ["--output", "{out}"], tmp_path, capsys)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: --images: data/elpv-binary does not exist"), lines
    assert "scripts/fetch_elpv.py" in lines[0] and not out.exists()


def test_latents_without_flip_pairs_need_no_flip(tmp_path, capsys) -> None:
    """learn_classify flips through the run's stored mirrored latents: a run without them is one line
    (and --no-flip is the way out), before anything is trained."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"run": {"codec_hash": "x"}}))
    code, lines, _ = run_case(
        "learn_classify", ["--latents", str(run), "--output", "{out}"], tmp_path, capsys
    )
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: --latents: "), lines
    assert "--no-flip" in lines[0]


def test_the_report_needs_its_held_out_files(tmp_path, capsys) -> None:
    """evaluate_codec measures on the first codec's held-out files: missing ones (data/ not fetched)
    are one line naming the flag, before anything is measured or written."""
    from pipeline.codec import zoo

    description = json.loads((zoo.BUNDLED_DIR / "rgb-16x-klt.json").read_text())
    description["metadata"]["training"]["data"]["roots"] = [str(tmp_path / "not-fetched")]
    (tmp_path / "moved.json").write_text(json.dumps(description))
    (tmp_path / "moved.safetensors").write_bytes((zoo.BUNDLED_DIR / "rgb-16x-klt.safetensors").read_bytes())
    argv = ["--image-codecs", str(tmp_path / "moved"), "--audio-codecs", "--out", str(tmp_path / "out")]
    code, lines, _ = run_case("evaluate_codec", argv, tmp_path, capsys)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: --image-codecs: ") and "scripts/fetch_data.py" in lines[0], lines
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere: nothing to refuse")
def test_an_output_in_a_read_only_folder_is_refused(tmp_path, capsys) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        argv = ["--output", str(locked / "out")]
        code, lines, _ = run_case("encode_imagenet", argv, tmp_path, capsys)
    finally:
        locked.chmod(0o700)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: --output: "), lines
    assert not (locked / "out").exists()


@pytest.mark.parametrize(
    ("job", "files"),
    [
        ("encode_imagenet", ["notes.txt", "a/README"]),  # image folder: nothing it takes
        ("encode_audio", ["cover.jpg"]),  # audio folder (forced below): no audio file
    ],
)
def test_an_input_with_nothing_to_encode_leaves_no_trace(job, files, tmp_path, capsys) -> None:
    """The input exists and holds files, none of them encodable (NoInputsError, found once the
    source opens, after parsing): one line, exit 2, and no output folder left behind (not even its
    parents, nor the lease's lock file), while an existing output folder is left as it was."""
    root = tmp_path / "in"
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")
    source = ["--source", "audio-folder"] if job == "encode_audio" else []
    new = tmp_path / "new" / "nested" / "out"
    code, lines, _ = run_case(job, ["--input", str(root), "--output", str(new), *source], tmp_path, capsys)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: --input: no "), lines
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    code, lines, _ = run_case(
        job, ["--input", str(root), "--output", str(existing), *source], tmp_path, capsys
    )
    assert code == 2 and len(lines) == 1, lines
    assert sorted(p.name for p in existing.iterdir()) == ["_lease.lock", "keep.txt"]
