"""The listing end to end: input manifests encode like folders, resume continues its stored listing,
and files a run does not take are counted, never silently dropped."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from e2e_helpers import SAMPLE_IMAGES, encode

from pipeline.manifest import LISTING, MARKERS

pytestmark = pytest.mark.slow


def _latents_by_source(output) -> dict[str, np.ndarray]:
    out = {}
    for tar in sorted(output.glob("*.tar")):
        for s in wds.WebDataset(str(tar), shardshuffle=False).decode():
            out[s["json"]["source"].removeprefix("file://")] = s["latent.npy"]
    return out


@pytest.mark.parametrize("partitions", [1, 3])
def test_an_input_manifest_encodes_what_its_folder_does(
    reference_run, corpus, klt_codec, tmp_path, partitions
):
    """One manifest file, or a folder of 3 (its partitions, listed as Ray tasks once Ray is up)."""
    files = sorted(p for p in corpus.rglob("*.JPEG"))
    table = pa.table({"path": [str(p) for p in files], "label": [p.parent.name for p in files]})
    if partitions == 1:
        source = tmp_path / "inputs.parquet"
        pq.write_table(table, source)
    else:
        source = tmp_path / "manifests"
        source.mkdir()
        cut = [0, 9, 17, len(files)]
        for i in range(partitions):
            pq.write_table(table.slice(cut[i], cut[i + 1] - cut[i]), source / f"part-{i}.parquet")
    output = tmp_path / "out"
    summary = encode(source, output, klt_codec)
    assert (summary.inputs, summary.written, summary.errors) == (25, 24, 1)
    ours, reference = _latents_by_source(output), _latents_by_source(reference_run)
    assert ours.keys() == reference.keys() and len(ours) == 24
    for path, z in ours.items():
        np.testing.assert_array_equal(z, reference[path])
    stored = pq.read_table(output / LISTING)
    assert stored.num_rows == 25 and stored.column("uri").to_pylist() == [str(p) for p in files]


def test_resume_continues_the_stored_listing_and_append_lists_again(corpus, klt_codec, tmp_path):
    inputs = tmp_path / "train"
    shutil.copytree(corpus, inputs)
    output = tmp_path / "out"
    first = encode(inputs, output, klt_codec)
    (output / MARKERS / "shard-000002.json").unlink()  # as if the run had stopped before shard 2
    (output / "manifest.json").unlink()
    shutil.copy(SAMPLE_IMAGES / "n00000004" / "n00000004_1.JPEG", inputs / "n00000004" / "late.JPEG")
    resumed = encode(inputs, output, klt_codec)  # the stored listing: no "inputs changed" refusal
    assert (resumed.shards_encoded, resumed.shards_skipped, resumed.inputs) == (
        1,
        first.shards_encoded - 1,
        25,
    )
    appended = encode(inputs, output, klt_codec, mode="append")  # lists again: the late input
    assert (appended.written_this_run, appended.inputs) == (1, 26)


def test_files_a_run_does_not_take_are_counted_by_reason(klt_codec, tmp_path, capsys):
    inputs = tmp_path / "train"
    shutil.copytree(SAMPLE_IMAGES, inputs)
    (inputs / "n00000004" / "notes.txt").write_text("not an image")
    (inputs / "n00000004" / "LICENSE").write_text("no extension")
    (inputs / "n00000005" / "loop").symlink_to(inputs)  # a link back up: walked once, counted
    shutil.copy(SAMPLE_IMAGES / "n00000004" / "n00000004_1.JPEG", inputs / "n00000005" / ".hidden.JPG")
    summary = encode(inputs, tmp_path / "out", klt_codec)
    assert summary.skipped == {"extension .txt": 1, "link loop": 1, "no extension": 1}
    assert summary.inputs == 25  # the hidden, upper-case .JPG is an image, as for ImageFolder
    assert "skipped files    3 not listed" in summary.format()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["source"]["skipped"] == summary.skipped
    (tmp_path / "out" / "manifest.json").unlink()  # resume: the stored listing, not a new walk
    (inputs / "n00000004" / "more.txt").write_text("not listed again, so not counted")
    resumed = encode(inputs, tmp_path / "out", klt_codec)
    assert resumed.skipped == summary.skipped
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["source"] == manifest["source"]
