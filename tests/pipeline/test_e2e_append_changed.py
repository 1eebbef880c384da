"""--mode append re-encodes sources whose bytes changed (contract C4), on a real local Ray.

Encode a small corpus, then rewrite one image with another photo's bytes and repair a corrupt one;
append must encode exactly those two again into a new shard, leave the old shards' bytes alone,
list the replaced sample as superseded, and the stock webdataset reader plus that list must give
exactly one live entry per key, the new one holding the new bytes' latent. Also: cache keys are
made of the manifest's codec and preprocessing hashes, and `_run.json` says complete only once the
manifest is written (contract C5)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from e2e_helpers import SAMPLE_IMAGES, SIZE, encode, read_errors, read_manifest, read_webdataset

pytestmark = pytest.mark.slow


def _corpus(tmp_path: Path) -> Path:
    """Two classes of the bundled photos (12 inputs) plus one corrupt .JPEG: 13 inputs, 4 shards."""
    root = tmp_path / "corpus" / "train"
    for cls in ("n00000004", "n00000005"):
        shutil.copytree(SAMPLE_IMAGES / cls, root / cls)  # copy2: the originals' mtimes
    (root / "n00000005" / "n00000005_zz.JPEG").write_bytes(np.random.default_rng(1).bytes(2000))
    return root


def _latent(codec_path: Path, image: Path) -> np.ndarray:
    """The standard run's latent of one image: its preprocessing, then the codec, in this process."""
    import torch

    from pipeline.codec import load
    from pipeline.preprocess.image import ImagePolicy, decode_image, to_codec_input

    policy = ImagePolicy(size=SIZE, crop="center", channels=3, multiple=8)
    x = to_codec_input(decode_image(image.read_bytes(), policy).array)[None]
    return load(str(codec_path)).freeze().encode(torch.from_numpy(x))[0].numpy()


def _shard_of_url(manifest: dict) -> dict[str, int]:
    return {s["name"]: s["shard"] for s in manifest["shards"]}


def test_append_reencodes_changed_sources_and_supersedes_old_entries(ray_session, klt_codec, tmp_path):
    corpus = _corpus(tmp_path)
    output = tmp_path / "out"
    first = encode(corpus, output, klt_codec)
    assert (first.inputs, first.written, first.errors, first.shards_encoded) == (13, 12, 1, 4)
    state = json.loads((output / "_run.json").read_text())
    assert state["complete"] is True
    old_tars = {p.name: p.read_bytes() for p in output.glob("shard-*.tar")}
    before = {s["__key__"]: s for s in read_webdataset(output)}
    old_shard = {k: int(Path(s["__url__"]).stem.split("-")[1]) for k, s in before.items()}

    # one photo gets another photo's bytes (a different image, a different size); the corrupt file is
    # replaced by a real photo: the first is re-encoded and superseded, the second simply retried
    changed, donor = (
        corpus / "n00000004" / "n00000004_2.JPEG",
        SAMPLE_IMAGES / "n00000008" / "n00000008_1.JPEG",
    )
    repaired, donor2 = (
        corpus / "n00000005" / "n00000005_zz.JPEG",
        SAMPLE_IMAGES / "n00000009" / "n00000009_1.JPEG",
    )
    assert changed.read_bytes() != donor.read_bytes()
    changed.write_bytes(donor.read_bytes())
    repaired.write_bytes(donor2.read_bytes())

    appended = encode(corpus, output, klt_codec, mode="append")
    assert (appended.shards_encoded, appended.shards_skipped, appended.written_this_run) == (1, 4, 2)
    assert (appended.inputs, appended.written, appended.errors, appended.changed) == (13, 13, 0, 2)
    assert "changed sources  2 re-encoded" in appended.format()
    assert {p.name: p.read_bytes() for p in output.glob("shard-*.tar") if p.name in old_tars} == old_tars

    manifest = read_manifest(output)
    assert manifest["run"]["appends"] == 1
    assert manifest["superseded"] == [
        {"key": "n00000004_n00000004_2", "shard": old_shard["n00000004_n00000004_2"], "by_shard": 4}
    ]
    assert manifest["totals"] == {"inputs": 13, "written": 13, "errors": 0}
    assert read_errors(output) == []  # the corrupt file's row was replaced by its sample
    assert json.loads((output / "_run.json").read_text())["complete"] is True

    # stock webdataset + the manifest's superseded list: exactly one live entry per key
    shard_of = _shard_of_url(manifest)
    dropped = {(e["shard"], e["key"]) for e in manifest["superseded"]}
    samples = read_webdataset(output)
    assert len(samples) == 14  # the superseded sample is still in its (immutable) shard
    live = [s for s in samples if (shard_of[Path(s["__url__"]).name], s["__key__"]) not in dropped]
    keys = [s["__key__"] for s in live]
    assert len(keys) == len(set(keys)) == manifest["totals"]["written"] == 13
    by_key = {s["__key__"]: s for s in live}
    # the run's statistics describe exactly the live latents (the superseded one taken out)
    stats, bits = manifest["statistics"], manifest["latent"]["bits"]
    values = np.concatenate([s["latent.npy"].reshape(12, -1) for s in live], axis=1).astype(np.int64)
    histogram = [np.bincount(row + 2 ** (bits - 1), minlength=2**bits).tolist() for row in values]
    assert (stats["count"], stats["positions"], stats["histogram"]) == (13, values.shape[1], histogram)
    np.testing.assert_allclose(stats["mean"], values.mean(axis=1), rtol=1e-9)

    # the live entry of the changed key is the donor photo's latent (the codec run on its own)
    new = by_key["n00000004_n00000004_2"]
    assert Path(new["__url__"]).name == "shard-000004.tar"
    np.testing.assert_array_equal(new["latent.npy"], _latent(klt_codec, donor))
    assert not np.array_equal(new["latent.npy"], before["n00000004_n00000004_2"]["latent.npy"])
    np.testing.assert_array_equal(by_key["n00000005_n00000005_zz"]["latent.npy"], _latent(klt_codec, donor2))
    # unchanged samples are the ones first written
    for key, s in by_key.items():
        if key not in ("n00000004_n00000004_2", "n00000005_n00000005_zz"):
            np.testing.assert_array_equal(s["latent.npy"], before[key]["latent.npy"])

    # cache keys: sha256(source sha256 : codec hash : preprocessing hash), hashes from the manifest
    run = manifest["run"]
    assert run["codec_hash"] == manifest["codec"]["hash"]
    body = json.dumps(manifest["preprocessing"], sort_keys=True, separators=(",", ":")).encode()
    assert run["preprocessing_hash"] == hashlib.sha256(body).hexdigest()
    source_sha = hashlib.sha256(donor.read_bytes()).hexdigest()
    salt = f"{source_sha}:{run['codec_hash']}:{run['preprocessing_hash']}"
    assert new["json"]["cache_key"] == hashlib.sha256(salt.encode()).hexdigest()
    assert new["json"]["cache_key"] != before["n00000004_n00000004_2"]["json"]["cache_key"]

    # nothing changed since: append encodes nothing and the manifest stays the same
    again = encode(corpus, output, klt_codec, mode="append")
    assert (again.shards_encoded, again.written_this_run) == (0, 0)
    assert read_manifest(output) == manifest


def test_run_state_is_incomplete_until_the_manifest(ray_session, klt_codec, tmp_path):
    """plan_run (the start of every mode) marks the run incomplete; the end of the run completes it."""
    from pipeline.config import EncodeConfig, ImageSettings
    from pipeline.runtime.driver import prepare_run
    from pipeline.runtime.plan import plan_run
    from pipeline.sinks import SinkSpec

    corpus = tmp_path / "c" / "train"
    shutil.copytree(SAMPLE_IMAGES / "n00000004", corpus / "n00000004")
    output = tmp_path / "out"
    cfg = EncodeConfig(
        input=str(corpus),
        sink=SinkSpec(output=str(output), shard_size=4),
        codec=str(klt_codec),
        image=ImageSettings(size=64),
    )
    prep = prepare_run(cfg)
    plan_run(prep.root, prep.listing, prep.identity, cfg.sink.shard_size, "overwrite")
    assert json.loads((output / "_run.json").read_text())["complete"] is False
    encode(corpus, output, klt_codec)
    assert json.loads((output / "_run.json").read_text())["complete"] is True
    assert (output / "manifest.json").exists()
    for mode in ("resume", "append"):  # every later run starts incomplete again (the append test
        # above sees an append run complete)
        plan_run(prep.root, prep.listing, prep.identity, cfg.sink.shard_size, mode)
        state = json.loads((output / "_run.json").read_text())
        assert (state["complete"], state["appends"]) == (False, 0), mode
