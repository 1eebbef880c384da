"""Faults during a run on a real Ray: workers that die, a disk that fills up, a read that hangs.

Every run here must end with the reference run's bytes (conftest.reference_run), or report exactly
the shards it could not finish, while the rest of the run completes. The existing resume tests cover
a killed driver and a shard whose write fails every time; these cover what they do not.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e_helpers import (
    REPO,
    SHARD_SIZE,
    SIZE,
    assert_same_tree,
    encode,
    read_errors,
    read_manifest,
    run_job,
    standard_args,
    tree_bytes,
    uri_to_path,
)

pytestmark = pytest.mark.slow

SHARDS = 7  # the standard run: 25 inputs in shards of 4
ISOLATED_RUN = Path(__file__).with_name("isolated_run.py")


def _tmp_name(reference: Path, name: str) -> str:
    """The temporary name the writer uses for `name` (it is named after the bytes it writes)."""
    return f"{name}.tmp-{hashlib.sha1((reference / name).read_bytes()).hexdigest()[:10]}"


def _drop_shards(output: Path, shards: list[int]) -> None:
    """What a run that never committed these shards leaves: no tar, no marker, no manifest."""
    for shard in shards:
        (output / f"shard-{shard:06d}.tar").unlink()
        (output / "_shards" / f"shard-{shard:06d}.json").unlink()
    (output / "manifest.json").unlink()
    (output / "errors.parquet").unlink()


def test_killed_workers_are_replaced_and_the_output_is_unchanged(reference_run, corpus, klt_codec, tmp_path):
    """Worker processes die for real (os._exit in the Ray actor / task process, as an OOM kill):
    an encoder actor in the middle of shard 3, a writer after shard 4's tar is in place but before
    its marker (so the retry writes the shard a second time), and shard 6 (the last) kills every worker
    that takes it. Ray restarts the actors and reruns the shards; shard 6 is given up after a bounded
    number of attempts and reported, the rest completes; resuming then gives the reference bytes."""
    output = tmp_path / "out"
    switch = tmp_path / "kill-switch"
    config = {
        "input": str(corpus),
        "sink": {"output": str(output), "shard_size": SHARD_SIZE},
        "codec": str(klt_codec),
        "image": {"size": SIZE},
        "progress": False,
    }
    spec = {"runs": [{"config": config, "kill_switch": "encode 3 once\nwrite 4 once\nencode 6 always"}]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = os.environ | {"WALLOC_TEST_KILL_SWITCH": str(switch)}
    log = tmp_path / "driver.log"
    with log.open("wb") as out:
        rc = subprocess.run(
            [sys.executable, str(ISOLATED_RUN), str(tmp_path / "spec.json"), str(tmp_path / "result.json")],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=540,
        ).returncode
    assert rc == 0, log.read_text()[-4000:]
    (first,) = json.loads((tmp_path / "result.json").read_text())

    from pipeline.runtime.ray_exec import TASK_RETRIES

    deaths = (tmp_path / "kill-switch.log").read_text().split("\n")[:-1]
    stages = [" ".join(line.split()[:2]) for line in deaths]
    assert stages.count("encode 3") == 1 and stages.count("write 4") == 1
    assert stages.count("encode 6") == TASK_RETRIES + 1, deaths  # bounded: then the shard is given up
    assert len({line.split()[2] for line in deaths}) == len(deaths), "each death is another process"

    # One shard in flight per CPU worker: a shard that kills every worker takes only itself down.
    assert first["failed_shards"] == [6]
    assert "its task failed" in first["failures"]["6"]
    last = json.loads((reference_run / "manifest.json").read_text())["shards"][-1]
    assert last["shard"] == 6
    expected = (25, 24 - last["samples"], 1 - last["errors"])  # 24 photos + 1 corrupt input
    assert (first["inputs"], first["written"], first["errors"]) == expected
    ref = tree_bytes(reference_run)
    after_first = tree_bytes(output)
    for shard in (0, 1, 2, 3, 4, 5):  # the killed-and-retried shards 3 and 4 included, byte for byte
        for name in (f"shard-{shard:06d}.tar", f"_shards/shard-{shard:06d}.json"):
            assert after_first[name] == ref[name], name
    assert "shard-000006.tar" not in after_first and "_shards/shard-000006.json" not in after_first

    resumed = encode(corpus, output, klt_codec)  # the same command again (--mode resume), no kills
    assert (resumed.failed_shards, resumed.shards_encoded, resumed.shards_skipped) == ([], 1, 6)
    assert_same_tree(reference_run, output)  # manifest, errors.parquet, markers: all of it


def test_disk_full_mid_write_is_retried_a_lasting_failure_exits_1(
    reference_run, corpus, klt_codec, tmp_path, capsys
):
    """Shard 2's first write attempt hits a full disk in the middle of writing (its temporary file is
    a link to /dev/full: ENOSPC on write); shard 5 cannot be written at all (a folder holds its
    temporary name). Shard 2 is retried and lands whole; shard 5 fails, the job says which and why
    and exits 1, no partial file is visible; the same command then finishes the output."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this machine")
    output = tmp_path / "out"
    shutil.copytree(reference_run, output)
    _drop_shards(output, [2, 5])
    disk_full = output / _tmp_name(reference_run, "shard-000002.tar")
    disk_full.symlink_to("/dev/full")
    blocker = output / _tmp_name(reference_run, "shard-000005.tar")
    blocker.mkdir()

    argv = standard_args(corpus, output, klt_codec)
    rc = run_job(argv)
    printed = capsys.readouterr().out
    assert rc == 1, printed
    assert "FAILED: [5]" in printed and "shard 5 FAILED  IsADirectoryError" in printed, printed

    assert not disk_full.is_symlink(), "the failed attempt's temporary file must be removed"
    files = sorted(tree_bytes(output))
    assert "shard-000005.tar" not in files and "_shards/shard-000005.json" not in files
    assert [f for f in files if ".tmp-" in f] == [], "no partial file may be left behind"
    assert (output / "shard-000002.tar").read_bytes() == (reference_run / "shard-000002.tar").read_bytes()
    manifest = read_manifest(output)
    assert manifest["totals"] == {"inputs": 25, "written": 20, "errors": 1}
    assert [s["shard"] for s in manifest["shards"]] == [0, 1, 2, 3, 4, 6]

    blocker.rmdir()
    assert run_job(argv) == 0
    assert_same_tree(reference_run, output)


def _slow_source(slow_key: str, flags: Path):
    """An image-folder source whose read of one item hangs until released (a stuck network mount).

    Defined in a function so that Ray pickles the class by value into its workers."""
    from pipeline.sources.image_folder import ImageFolderSource

    class HangingReadSource(ImageFolderSource):
        registry_name = "hanging-read"

        def read_bytes(self, item):
            if item.key == slow_key:
                (flags / "started").touch()
                deadline = time.monotonic() + 300
                while not (flags / "release").exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
                (flags / "finished").touch()
            return super().read_bytes(item)

    return HangingReadSource


def test_a_read_that_hangs_becomes_a_timeout_error_row(ray_session, corpus, klt_codec, tmp_path, monkeypatch):
    from pipeline.registry import SOURCES
    from pipeline.sources.image_folder import ImageFolderSource

    items = ImageFolderSource(str(corpus)).list_items()
    slow = items[9]  # shard 2
    flags = tmp_path / "flags"
    flags.mkdir()
    monkeypatch.setitem(SOURCES, "hanging-read", _slow_source(slow.key, flags))
    output = tmp_path / "out"
    try:
        summary = encode(corpus, output, klt_codec, source="hanging-read", ray={"sample_timeout_s": 5.0})
        # the run did not wait for the stuck read: it is still stuck now
        assert (flags / "started").exists() and not (flags / "finished").exists()
    finally:
        (flags / "release").touch()

    assert not summary.failed_shards
    assert (summary.inputs, summary.written, summary.errors) == (25, 23, 2)
    errors = {e["key"]: e for e in read_errors(output)}
    assert errors[slow.key]["stage"] == "timeout"
    assert errors[slow.key]["reason"] == "reading took longer than 5 s"
    assert errors[slow.key]["shard"] == 2
    assert uri_to_path(errors[slow.key]["source"]) == uri_to_path(slow.uri)
    manifest = read_manifest(output)
    assert manifest["totals"] == {"inputs": 25, "written": 23, "errors": 2}
    shard2 = next(s for s in manifest["shards"] if s["shard"] == 2)
    assert (shard2["samples"], shard2["errors"]) == (3, 1)  # the shard's other inputs are written
