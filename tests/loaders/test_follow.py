"""Reading a run while it is written (C5): every sample exactly once, ending when the run completes."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from synth import keys_of, make_samples, write_run_slowly

from pipeline.codec import load as load_codec
from pipeline.loaders import LatentWebDataset, LatentZarrStream, RunInfo

LOADERS = {"webdataset": LatentWebDataset, "zarr": LatentZarrStream}


def _follow(cls, root, timeout=60, **kw):
    return cls(str(root), follow=True, poll=0.02, follow_timeout=timeout, with_meta=True, **kw)


@pytest.mark.parametrize("fmt", sorted(LOADERS))
@pytest.mark.parametrize("complete_flag", [True, False])
def test_follower_reads_every_sample_once_while_shards_commit(fmt, complete_flag, tmp_path, small_codec):
    samples = make_samples(25)
    root = tmp_path / "run"
    first_read = threading.Event()  # the manifest waits for it: timing-proof on a loaded machine
    kwargs = {"fmt": fmt, "codec_hash": load_codec(small_codec).hash, "complete_flag": complete_flag}
    writer = threading.Thread(
        target=write_run_slowly, args=(root, samples), kwargs=kwargs | {"hold_manifest": first_read}
    )
    writer.start()
    try:
        ds = _follow(LOADERS[fmt], root, codec=small_codec, batch_size=4)
        batches, before_manifest = [], 0
        for batch in ds:
            before_manifest += not (root / "manifest.json").exists()
            batches.append(batch)
            first_read.set()
    finally:
        first_read.set()
        writer.join()
    assert Counter(keys_of(batches)) == Counter(s.key for s in samples)
    assert before_manifest > 0  # it did read shards before the run was over


@pytest.mark.parametrize("fmt", sorted(LOADERS))
def test_followers_on_ranks_split_the_shards(fmt, tmp_path, small_codec):
    samples = make_samples(25)
    root = tmp_path / "run"
    write_run_slowly(root, samples, fmt=fmt, codec_hash=load_codec(small_codec).hash, delay=0)
    parts = [keys_of(_follow(LOADERS[fmt], root, rank=r, world_size=3)) for r in range(3)]
    assert Counter(k for p in parts for k in p) == Counter(s.key for s in samples)
    assert all(parts)


def test_follow_of_an_unfinished_webdataset_run_needs_the_codec(tmp_path, small_codec):
    root = tmp_path / "run"
    write_run_slowly(
        root, make_samples(4), fmt="webdataset", codec_hash=load_codec(small_codec).hash, delay=0
    )
    (root / "manifest.json").unlink()
    with pytest.raises(ValueError, match="pass codec="):
        LatentWebDataset(str(root), follow=True)
    other = tmp_path / "other_codec"
    from pipeline.codec import CodecConfig, build, save

    save(build(CodecConfig(kind="2d", channels=3, J=3, latent_dim=12, Nd=32, decoder="linear")), other)
    with pytest.raises(ValueError, match="written by codec"):
        LatentWebDataset(str(root), follow=True, codec=str(other))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", sorted(LOADERS))
def test_follower_beside_a_real_encode_run(fmt, tmp_path, small_codec, ray_session):
    """A real run (local Ray, small shards) and a follower started together: each sample once."""
    from pipeline.config import DEFAULT_IMAGE_INPUT, EncodeConfig, ImageSettings
    from pipeline.runtime import run_encode
    from pipeline.sinks import SinkSpec

    root = tmp_path / "live"
    cfg = EncodeConfig(
        input=DEFAULT_IMAGE_INPUT,
        sink=SinkSpec(output=str(root), format=fmt, shard_size=2),
        codec=small_codec,
        limit=16,
        image=ImageSettings(size=64),
        progress=False,
    )
    result = {}
    writer = threading.Thread(target=lambda: result.setdefault("summary", run_encode(cfg)))
    writer.start()
    try:
        keys = keys_of(_follow(LOADERS[fmt], root, 300, codec=small_codec, output="int"))
    finally:
        writer.join()
    assert result["summary"].written == 16
    assert len(RunInfo.open(str(root)).manifest["shards"]) == 8
    assert Counter(keys) == Counter(keys_of(LOADERS[fmt](str(root), with_meta=True)))
    assert len(keys) == 16
