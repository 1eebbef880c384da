"""Loaders over real pipeline outputs (one local-Ray run per format, shared by the module)."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import torch
import webdataset as wds

from pipeline.codec import CodecConfig, build, save
from pipeline.codec.bottleneck import Compander
from pipeline.config import DEFAULT_IMAGE_INPUT, EncodeConfig, ImageSettings
from pipeline.loaders import CodecMismatchError, LatentWebDataset, LatentZarrDataset, RunInfo
from pipeline.loaders.webdataset import TamperedShardError
from pipeline.sinks import SinkSpec

pytestmark = pytest.mark.slow
N = 16


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from pipeline.runtime import run_encode

    tmp = tmp_path_factory.mktemp("loaders")
    codec = build(CodecConfig(kind="2d", channels=3, J=3, latent_dim=12, Nd=32, decoder="linear"))
    with torch.no_grad():
        codec.encoder.weight.mul_(50)
    codec_path = str(save(codec, tmp / "codec"))
    out = {}
    for name, fmt, latent_format in [
        ("npy", "webdataset", "npy"),
        ("zstd", "webdataset", "zstd"),
        ("zarr", "zarr", "npy"),
    ]:
        cfg = EncodeConfig(
            input=DEFAULT_IMAGE_INPUT,
            sink=SinkSpec(output=str(tmp / name), format=fmt, latent_format=latent_format, shard_size=4),
            codec=codec_path,
            limit=N,
            image=ImageSettings(size=64),
            progress=False,
        )
        summary = run_encode(cfg)
        assert summary.written == N and summary.errors == 0
        out[name] = str(tmp / name)
    out["codec"] = codec_path
    return out


def _raw_latents(root: str) -> dict[str, np.ndarray]:
    """Latents read with the stock webdataset library only."""
    urls = RunInfo.open(root).shard_urls()
    return {
        s["__key__"]: np.load(io.BytesIO(s["latent.npy"])) for s in wds.WebDataset(urls, shardshuffle=False)
    }


def test_one_epoch_yields_every_sample_once(runs):
    ds = LatentWebDataset(runs["npy"], output="int", with_meta=True, shuffle_buffer=8)
    keys = [b.meta["key"] for b in ds]
    assert sorted(keys) == sorted(_raw_latents(runs["npy"]))
    assert len(keys) == len(set(keys)) == N


def test_int_output_is_the_stored_latent_and_float_is_dequantized(runs):
    raw = _raw_latents(runs["npy"])
    compander = Compander(8)
    for b in LatentWebDataset(runs["npy"], output="int", shuffle_shards=False):
        assert b.latents.dtype == torch.int8 and np.array_equal(b.latents.numpy(), raw[b.key])
    for b in LatentWebDataset(runs["npy"], output="float", shuffle_shards=False):
        assert torch.equal(b.latents, compander.to_normal(torch.from_numpy(raw[b.key]).float()))


def test_entropy_coded_shards_decode_to_the_same_latents(runs):
    npy = {b.key: b.latents for b in LatentWebDataset(runs["npy"], output="int")}
    coded = {b.key: b.latents for b in LatentWebDataset(runs["zstd"], output="int")}
    assert npy.keys() == coded.keys()
    assert all(torch.equal(npy[k], coded[k]) for k in npy)


def test_batches_have_one_shape_and_labels(runs):
    batches = list(LatentWebDataset(runs["npy"], batch_size=5, shuffle_buffer=4))
    assert [len(y) for _, y in batches] == [5, 5, 5, 1]
    assert all(z.shape[1:] == (12, 8, 8) for z, _ in batches)
    labels = torch.cat([y for _, y in batches])
    assert set(labels.tolist()) <= set(RunInfo.open(runs["npy"]).label_map.values())


def test_dataloader_workers_see_disjoint_shards(runs):
    ds = LatentWebDataset(runs["npy"], with_meta=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    keys = [b.meta["key"] for b in loader]  # the Batch passes through the DataLoader unchanged
    assert len(keys) == len(set(keys)) == N


def test_ranks_see_disjoint_shards(runs, monkeypatch):
    seen = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        seen.append({b.key for b in LatentWebDataset(runs["npy"])})
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == N


def test_epochs_reshuffle_deterministically(runs):
    def order(epoch):
        ds = LatentWebDataset(runs["npy"], with_meta=True, seed=3)
        ds.set_epoch(epoch)
        return [b.key for b in ds]

    assert order(0) == order(0)
    assert order(0) != order(1)


def test_resampled_stream_is_infinite(runs):
    it = iter(LatentWebDataset(runs["npy"], resampled=True))
    assert len([next(it) for _ in range(3 * N)]) == 3 * N


def test_tampered_shard_is_detected(runs, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(runs["npy"], copy)
    shard = sorted(copy.glob("*.tar"))[0]
    data = bytearray(shard.read_bytes())
    with tarfile.open(shard) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".npy"))
    data[member.offset_data + member.size - 1] ^= 0xFF  # one latent value changes
    shard.write_bytes(bytes(data))
    with pytest.raises(TamperedShardError, match="sha256"):
        list(LatentWebDataset(str(copy)))


def test_zarr_dataset_matches_webdataset(runs):
    raw = _raw_latents(runs["npy"])
    ds = LatentZarrDataset(runs["zarr"], output="int", with_meta=True)
    assert len(ds) == N
    for i in range(len(ds)):
        z, label = sample = ds[i]
        assert np.array_equal(z.numpy(), raw[sample.meta["key"]]) and sample.key == sample.meta["key"]
        assert label == sample.meta["label"]
    batch = ds.__getitems__([5, 1, 3])
    assert [b.key for b in batch] == [ds[i].key for i in (5, 1, 3)]
    z, y = collated = torch.utils.data.default_collate(batch)  # what DataLoader(batch_size=3) does
    assert z.shape == (3, 12, 8, 8) and y.shape == (3,) and collated.key == [b.key for b in batch]


def test_zarr_with_distributed_sampler(runs):
    ds = LatentZarrDataset(runs["zarr"], with_meta=True)
    parts = []
    for rank in range(2):
        sampler = torch.utils.data.DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=1)
        loader = torch.utils.data.DataLoader(
            ds, batch_size=3, sampler=sampler, num_workers=2
        )  # no collate_fn: torch's default collates Batches into a Batch
        parts.append({k for batch in loader for k in batch.key})
    assert not parts[0] & parts[1] and len(parts[0] | parts[1]) == N


def test_codec_must_match_the_data(runs, tmp_path):
    info = RunInfo.open(runs["npy"])
    codec = info.codec(runs["codec"])
    z, _ = next(iter(LatentWebDataset(runs["npy"], output="int")))
    assert codec.decode(z[None]).shape == (1, 3, 64, 64)
    other = build(CodecConfig(kind="2d", channels=3, J=3, latent_dim=12, Nd=32, decoder="linear"))
    other_path = save(other, tmp_path / "other")
    with pytest.raises(CodecMismatchError, match="written by codec"):
        info.codec(str(other_path))


def test_readme_training_loop_runs_on_a_real_output(runs):
    """The README's training-loop example, run as written (one epoch) on a pipeline output."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Reading latents in a training loop") :]
    code = section[section.index("```python") + len("```python") : section.index("```\n", 10)]
    assert "out/samples-wds" in code and "loss.backward()" in code
    code = code.replace("out/samples-wds", runs["npy"]).replace("range(10)", "range(1)")
    code = code.replace("num_workers=4", "num_workers=0")
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the project's own README
    assert torch.isfinite(scope["loss"]) and scope["loss"].requires_grad
