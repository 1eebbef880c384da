"""Resume, append and overwrite on a real local Ray: interrupted runs finish to the same bytes.

The reference is an uninterrupted standard run (conftest.reference_run); every test here must end
with exactly its files, or refuse with a message that says which --mode to use.
"""

from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from e2e_helpers import (
    REPO,
    SAMPLE_IMAGES,
    assert_same_tree,
    encode,
    job_command,
    read_manifest,
    read_webdataset,
    tree_bytes,
    uri_to_path,
)

pytestmark = pytest.mark.slow

SHARDS = 7  # the standard run: 25 inputs in shards of 4


def _markers(output: Path) -> list[Path]:
    return sorted((output / "_shards").glob("shard-*.json"))


def _wait_for_first_marker(proc: subprocess.Popen, output: Path, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _markers(output):
        if proc.poll() is not None:
            pytest.fail(
                f"the job exited ({proc.returncode}) before committing a shard:\n{log.read_text()[-3000:]}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"no shard committed within {timeout:.0f} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.02)


def test_resume_after_the_driver_is_killed(ray_session, reference_run, corpus, klt_codec, tmp_path):
    output = tmp_path / "out"
    log = tmp_path / "job.log"
    # the job's driver joins the session's cluster, as a driver on a cluster's head node would
    command = job_command(corpus, output, klt_codec, "--address", ray_session)
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_for_first_marker(proc, output, log, timeout=240)
        finally:
            proc.send_signal(signal.SIGKILL)  # a crash: no cleanup, no manifest
            proc.wait()
    committed = len(_markers(output))
    assert not (output / "manifest.json").exists(), "the killed run must not have committed a manifest"
    assert 1 <= committed < SHARDS, f"{committed} shards committed before the kill: nothing to resume"

    # the dead driver's lease would hold the output until its TTL runs out; its error message says to
    # remove the lease once no run is writing, which we know (the driver is dead, and Ray killed the
    # actors and tasks it owned)
    (output / "_lease.json").unlink(missing_ok=True)
    summary = encode(corpus, output, klt_codec)  # the same command, --mode resume (the default)
    assert (summary.shards_skipped, summary.shards_encoded) == (committed, SHARDS - committed)
    assert (summary.inputs, summary.written, summary.errors) == (25, 24, 1)
    _assert_same_output(reference_run, output)


def _assert_same_output(reference: Path, output: Path) -> None:
    """The reference's files, byte for byte; allowed extra: temporary files of killed writes."""
    ref, got = tree_bytes(reference), tree_bytes(output)
    leftovers = sorted(set(got) - set(ref))
    assert all(".tmp-" in name for name in leftovers), f"unexpected files: {leftovers}"
    assert sorted(ref) == sorted(set(got) - set(leftovers)), f"missing: {sorted(set(ref) - set(got))}"
    assert [n for n in ref if ref[n] != got[n]] == []
    keys = [s["__key__"] for s in read_webdataset(output)]
    assert len(keys) == len(set(keys)) == 24


def test_resume_after_losing_committed_shards(reference_run, corpus, klt_codec, tmp_path):
    output = tmp_path / "partial"
    shutil.copytree(reference_run, output)
    # a run that committed shards 0, 1, 3, 4, 6 and died: shards 2 and 5 never got their marker
    for shard in (2, 5):
        (output / "_shards" / f"shard-{shard:06d}.json").unlink()
        (output / f"shard-{shard:06d}.tar").unlink()
    (output / "manifest.json").unlink()
    (output / "errors.parquet").unlink()

    summary = encode(corpus, output, klt_codec)
    assert (summary.shards_skipped, summary.shards_encoded) == (5, 2)
    assert_same_tree(reference_run, output)


def test_changed_settings_or_inputs_refuse_to_resume(reference_run, corpus, klt_codec, tmp_path):
    from pipeline.runtime import OutputConflictError

    output = tmp_path / "out"
    shutil.copytree(reference_run, output)
    with pytest.raises(OutputConflictError, match=r"different settings \(differs in preprocessing\)"):
        encode(corpus, output, klt_codec, image={"size": 48})
    with pytest.raises(OutputConflictError, match=r"differs in shard_size.*--mode overwrite"):
        encode(corpus, output, klt_codec, sink={"shard_size": 5})
    with pytest.raises(OutputConflictError, match=r"differs in latent_format"):
        encode(corpus, output, klt_codec, sink={"latent_format": "zstd"})

    grown = tmp_path / "grown" / "train"
    shutil.copytree(corpus, grown)
    shutil.copy(SAMPLE_IMAGES / "n00000004" / "n00000004_1.JPEG", grown / "n00000004" / "n00000004_new.JPEG")
    with pytest.raises(OutputConflictError, match=r"inputs changed.*--mode append"):
        encode(grown, output, klt_codec)
    assert_same_tree(reference_run, output)  # a refused run leaves the output as it was

    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("not a pipeline output")
    with pytest.raises(OutputConflictError, match="holds no pipeline run"):
        encode(corpus, stranger, klt_codec)
    assert (stranger / "notes.txt").read_text() == "not a pipeline output"


def _small_corpus(root: Path, held_back: int) -> tuple[Path, list[Path]]:
    """Two classes (12 photos); the last `held_back` photos of the second class are kept aside."""
    corpus = root / "train"
    for wnid in ("n00000004", "n00000005"):
        shutil.copytree(SAMPLE_IMAGES / wnid, corpus / wnid)
    photos = sorted((corpus / "n00000005").glob("*.JPEG"))
    later = photos[len(photos) - held_back :]
    aside = root / "aside"
    aside.mkdir()
    for p in later:
        p.rename(aside / p.name)
    return corpus, sorted(aside.iterdir())


def test_append_encodes_only_new_inputs_then_overwrite_starts_again(reference_run, klt_codec, tmp_path):
    from pipeline.runtime import OutputConflictError

    corpus, later = _small_corpus(tmp_path, held_back=3)  # classes n00000004 -> 0, n00000005 -> 1
    output = tmp_path / "out"
    first = encode(corpus, output, klt_codec)
    assert (first.inputs, first.shards_encoded) == (9, 3)  # 4 + 4 + 1
    before = tree_bytes(output)

    for p in later:
        shutil.copy(p, corpus / "n00000005" / p.name)
    appended = encode(corpus, output, klt_codec, mode="append")
    assert (appended.shards_encoded, appended.shards_skipped, appended.written_this_run) == (1, 3, 3)
    assert (appended.inputs, appended.written, appended.errors) == (12, 12, 0)
    for name in ("shard-000000.tar", "shard-000001.tar", "shard-000002.tar"):
        assert (output / name).read_bytes() == before[name], f"append rewrote {name}"
    manifest = read_manifest(output)
    assert manifest["run"]["appends"] == 1
    assert manifest["totals"] == {"inputs": 12, "written": 12, "errors": 0}
    assert [s["samples"] for s in manifest["shards"]] == [4, 4, 1, 3]
    samples = read_webdataset(output)
    keys = [s["__key__"] for s in samples]
    assert len(keys) == len(set(keys)) == 12
    new = [uri_to_path(s["json"]["source"]).name for s in samples[-3:]]
    assert new == [p.name for p in later]

    # nothing new: append encodes nothing and changes nothing
    again = encode(corpus, output, klt_codec, mode="append")
    assert (again.shards_encoded, again.written_this_run) == (0, 0)
    assert read_manifest(output) == manifest

    # labels index the sorted class folders: a new class that sorts first would renumber the labels
    # already written, so append refuses it (and leaves the output as it was)
    before = tree_bytes(output)
    shutil.copytree(SAMPLE_IMAGES / "n00000009", corpus / "n00000001")
    with pytest.raises(OutputConflictError, match=r"change the labels of classes .*n00000004, n00000005"):
        encode(corpus, output, klt_codec, mode="append")
    assert tree_bytes(output) == before
    # a class that sorts last keeps every existing label: append goes ahead
    (corpus / "n00000001").rename(corpus / "n00000009")
    appended = encode(corpus, output, klt_codec, mode="append")
    assert (appended.shards_encoded, appended.written_this_run, appended.written) == (2, 6, 18)
    manifest = read_manifest(output)
    assert manifest["run"]["appends"] == 2
    assert manifest["label_map"] == {"n00000004": 0, "n00000005": 1, "n00000009": 2}
    samples = read_webdataset(output)
    assert len({s["__key__"] for s in samples}) == 18
    for s in samples:
        assert s["cls"] == manifest["label_map"][uri_to_path(s["json"]["source"]).parent.name]

    # overwrite: a fresh run of the 18 inputs (shards 4 + 4 + 4 + 4 + 2), the appended layout is gone
    fresh = encode(corpus, output, klt_codec, mode="overwrite")
    assert (fresh.shards_encoded, fresh.shards_skipped, fresh.written) == (5, 0, 18)
    manifest = read_manifest(output)
    assert manifest["run"]["appends"] == 0
    assert [s["samples"] for s in manifest["shards"]] == [4, 4, 4, 4, 2]
    assert sorted(p.name for p in output.glob("*.tar")) == [f"shard-{i:06d}.tar" for i in range(5)]
    assert len(list((output / "_shards").glob("*.json"))) == 5
    sources = [s["json"]["source"] for s in read_webdataset(output)]
    assert sources == sorted(sources)


def test_a_shard_that_cannot_be_written_is_reported_then_resumed(reference_run, corpus, klt_codec, tmp_path):
    output = tmp_path / "out"
    shutil.copytree(reference_run, output)
    tar = output / "shard-000002.tar"
    data = tar.read_bytes()
    for p in (tar, output / "_shards" / "shard-000002.json", output / "manifest.json"):
        p.unlink()
    # the writer's temporary file is named after the bytes it writes: a folder in its place makes every
    # write attempt of shard 2 fail (a full disk or a revoked bucket permission, here on demand)
    blocker = output / f"shard-000002.tar.tmp-{hashlib.sha1(data).hexdigest()[:10]}"
    blocker.mkdir()

    summary = encode(corpus, output, klt_codec)
    assert summary.failed_shards == [2]
    assert (summary.inputs, summary.written, summary.errors) == (25, 20, 1)
    manifest = read_manifest(output)
    # the manifest counts every input of the run, so that a reader sees 4 are neither written nor errors
    assert manifest["totals"] == {"inputs": 25, "written": 20, "errors": 1}
    assert manifest["source"]["items"] == 25
    assert 2 not in [s["shard"] for s in manifest["shards"]]

    blocker.rmdir()
    summary = encode(corpus, output, klt_codec)
    assert (summary.failed_shards, summary.shards_encoded, summary.shards_skipped) == ([], 1, 6)
    assert_same_tree(reference_run, output)


def test_zarr_append_adds_aligned_rows(reference_run, klt_codec, tmp_path):
    corpus, later = _small_corpus(tmp_path, held_back=3)
    output = tmp_path / "zarr"
    encode(corpus, output, klt_codec, sink={"format": "zarr"})
    for p in later:
        shutil.copy(p, corpus / "n00000005" / p.name)
    appended = encode(corpus, output, klt_codec, sink={"format": "zarr"}, mode="append")
    assert (appended.shards_encoded, appended.written_this_run, appended.written) == (1, 3, 12)

    group = zarr.open_group(str(output / "latents.zarr"), mode="r")
    valid = group["valid"][:]
    keys = group["keys"][:].tolist()
    latents = group["latents"][:]
    # rows 0-8: the first run; 9-11: the unused end of its last shard; 12-14: the appended shard
    assert len(valid) == 15
    assert valid.tolist() == [True] * 9 + [False] * 3 + [True] * 3
    assert len(set(k for k, v in zip(keys, valid, strict=True) if v)) == 12
    reference = {s["__key__"]: s["latent.npy"] for s in read_webdataset(reference_run)}
    for i in np.flatnonzero(valid):
        np.testing.assert_array_equal(latents[i], reference[keys[i]], err_msg=keys[i])
    manifest = read_manifest(output)
    assert [s["slot_offset"] for s in manifest["shards"]] == [0, 4, 8, 12]
