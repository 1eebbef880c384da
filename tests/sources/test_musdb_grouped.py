"""MUSDB stems that stream together: one sample per window holding the mixture and every stem.

A tiny MUSDB-style folder (mixture = exact sum of three stems) goes through the whole pipeline on a
local Ray into WebDataset and Zarr, and is read back with the stock libraries and with the loaders
(shuffled, resumed mid-epoch): every item holds all stems of one window, each stem's latent is the
codec's encoding of that stem's own window (recomputed here from the WAV files), and the mixture's
latent decodes close to the sum of the stems' decodes.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

RATE, WINDOW, CODEC = 44100, 4096, "stereo-44k-klt"
STEMS = ["mixture", "bass", "other", "vocals"]  # what the source finds: MUSDB order, no drums here
TRACKS = {"train": ["a", "b"], "test": ["c"]}
FRAMES = 2 * WINDOW + 777  # 3 windows per track, the last one partial


def musdb_sum_tree(root: Path) -> Path:
    """Stereo float WAVs at 44.1 kHz: three stems (tones + noise), the mixture their exact sum."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(FRAMES) / RATE
    for split, tracks in TRACKS.items():
        for track in tracks:
            stems = {}
            for k, stem in enumerate(("bass", "other", "vocals")):
                tone = 0.2 * np.sin(2 * np.pi * 110 * (k + 1) * (1 + rng.random()) * t)
                stems[stem] = (tone[:, None] + 0.03 * rng.standard_normal((FRAMES, 2))).astype(np.float32)
            folder = root / split / track
            folder.mkdir(parents=True)
            sf.write(folder / "mixture.wav", sum(stems.values()), RATE, subtype="FLOAT")
            for stem, x in stems.items():
                sf.write(folder / f"{stem}.wav", x, RATE, subtype="FLOAT")
    return root


def expected_latents(root: Path, meta: dict, codec) -> np.ndarray:
    """(S, C, T) latents of one window recomputed from the files: cut, per-stem mean, one scale."""
    import soundfile as sf

    signals = []
    for stem in STEMS:
        x, _ = sf.read(root / meta["split"] / meta["track"] / f"{stem}.wav", dtype="float64", always_2d=True)
        segment = x.T[:, meta["offset"] : meta["offset"] + WINDOW]
        signals.append(segment - segment.mean(axis=1, keepdims=True))
    scale = 1 / (2 * (max(np.abs(s).max() for s in signals) + 1e-8))
    out = np.zeros((len(STEMS), 2, WINDOW), dtype=np.float32)
    for i, s in enumerate(signals):
        out[i, :, : s.shape[1]] = s * scale
    return codec.encode(torch.from_numpy(out)).numpy()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, ray_session):
    from pipeline.config import AudioSettings, EncodeConfig
    from pipeline.runtime import run_encode
    from pipeline.sinks import SinkSpec

    base = tmp_path_factory.mktemp("stems")
    root = musdb_sum_tree(base / "musdb")
    out = {}
    for fmt, latent_format in (("webdataset", "npy"), ("webdataset-zstd", "zstd"), ("zarr", "npy")):
        output = base / fmt
        summary = run_encode(
            EncodeConfig(
                input=str(root),
                sink=SinkSpec(
                    output=str(output), shard_size=4, format=fmt.split("-")[0], latent_format=latent_format
                ),
                codec=CODEC,
                audio=AudioSettings(window=WINDOW, sample_rate=RATE),
                progress=False,
            )
        )
        assert (summary.inputs, summary.written, summary.errors, summary.failed_shards) == (9, 9, 0, [])
        out[fmt] = output
    return root, out


@pytest.mark.slow
def test_stock_webdataset_and_zarr_hold_every_stem_per_window(runs):
    import webdataset as wds
    import zarr

    from pipeline import codec as wc

    root, out = runs
    codec = wc.load(CODEC)
    manifest = json.loads((out["webdataset"] / "manifest.json").read_text())
    assert manifest["preprocessing"]["stems"] == STEMS
    assert manifest["latent"]["shape"] == [4, 108, WINDOW // 256 + 2]
    assert manifest["statistics"]["channels"] == 108  # per latent channel, over all stems
    shards = sorted(str(p) for p in out["webdataset"].glob("*.tar"))
    samples = list(wds.WebDataset(shards, shardshuffle=False, empty_check=False))
    assert len(samples) == 9
    for sample in samples:
        assert {f"{s}.latent.npy" for s in STEMS} <= set(sample), sorted(sample)
        meta = json.loads(sample["json"])
        assert meta["stems"] == STEMS and sample["__key__"] == meta["key"]
        z = np.stack([np.load(io.BytesIO(sample[f"{s}.latent.npy"])) for s in STEMS])
        assert np.array_equal(z, expected_latents(root, meta, codec)), meta["key"]
    coded = sorted(str(p) for p in out["webdataset-zstd"].glob("*.tar"))
    for sample in wds.WebDataset(coded, shardshuffle=False, empty_check=False):
        by_npy = next(s for s in samples if s["__key__"] == sample["__key__"])
        for stem in STEMS:
            z = codec.from_bytes(sample[f"{stem}.latent.wlat"]).numpy()
            assert np.array_equal(z, np.load(io.BytesIO(by_npy[f"{stem}.latent.npy"])))

    # what an append run reads back to take superseded samples out of the statistics: the whole stack
    from pipeline.manifest import OutputRoot
    from pipeline.registry import SINKS
    from pipeline.sinks import SinkSpec

    for fmt in out:
        spec = SinkSpec(output=str(out[fmt]), shard_size=4)
        marker = OutputRoot(str(out[fmt])).markers()[0]
        z = SINKS[fmt.split("-")[0]](spec).read_latent(marker.stats, marker.slot_offset, marker.keys[0])
        assert np.asarray(z).shape == (4, 108, WINDOW // 256 + 2), fmt

    group = zarr.open_group(str(out["zarr"] / "latents.zarr"), mode="r")
    assert group.attrs["stems"] == STEMS
    assert group["latents"].shape == (9, 4, 108, WINDOW // 256 + 2)
    assert tuple(group["latents"].metadata.dimension_names) == ("sample", "stem", "channel", "t")
    for row in range(9):
        meta = json.loads(str(group["meta"][row]))
        assert np.array_equal(group["latents"][row], expected_latents(root, meta, codec))


def _check_items(root, codec, z, metas, seen):
    """Each item of a batch: all stems of one window, exactly the codec's latents of that window."""
    assert z.shape[1:] == (4, 108, WINDOW // 256 + 2)
    for zi, meta in zip(z, metas, strict=True):
        assert meta["stems"] == STEMS
        assert np.array_equal(zi.numpy(), expected_latents(root, meta, codec)), meta["key"]
        seen.append(meta["key"])


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["webdataset", "webdataset-zstd", "zarr"])
def test_loaders_shuffle_and_resume_whole_windows(runs, fmt):
    from pipeline import codec as wc
    from pipeline.learning.separate import latents_and_meta
    from pipeline.loaders import LatentWebDataset, LatentZarrStream

    root, out = runs
    codec = wc.load(CODEC)
    kind = LatentZarrStream if fmt == "zarr" else LatentWebDataset
    options = dict(output="int", batch_size=2, shuffle_buffer=9, with_meta=True, seed=3)
    first = kind(str(out[fmt]), **options)
    assert first.info.stems == STEMS
    seen: list[str] = []
    batches = iter(first)
    for _ in range(2):
        batch = next(batches)
        z, labels = tuple(batch)[:2]  # latents and labels come first in every loader batch
        metas = latents_and_meta(batch)[1]
        mask = batch.mask if hasattr(batch, "mask") else batch[2]  # audio: valid latent steps
        assert mask.shape == (len(z), WINDOW // 256 + 2) and (labels == -1).all()
        _check_items(root, codec, z, metas, seen)
    state = first.state_dict()
    resumed = kind(str(out[fmt]), **options)
    resumed.load_state_dict(state)
    for batch in resumed:
        _check_items(root, codec, *latents_and_meta(batch), seen)
    normalized = kind(str(out[fmt]), batch_size=9, normalize=True)  # per latent channel, over stems
    z = latents_and_meta(next(iter(normalized)))[0]
    assert z.shape == (9, 4, 108, WINDOW // 256 + 2) and torch.isfinite(z).all()
    keys = sorted(f"{s}_{t}_{k:06d}" for s, ts in TRACKS.items() for t in ts for k in range(3))
    assert sorted(seen) == keys  # each window once, across the resume
    in_order = sorted(keys, key=lambda k: (k.split("_")[0] != "test", k))
    assert seen != in_order  # shuffled


@pytest.mark.slow
def test_mixture_latent_decodes_close_to_the_sum_of_the_stems(runs):
    """The joint normalisation keeps the stems' shares: decode(mixture) ~ sum of decode(stem)."""
    from pipeline import codec as wc
    from pipeline.learning.separate import latents_and_meta
    from pipeline.loaders import LatentWebDataset

    _, out = runs
    codec = wc.load(CODEC)
    data = LatentWebDataset(str(out["webdataset"]), output="int", batch_size=9, shuffle_shards=False)
    z = latents_and_meta(next(iter(data)))[0]
    with torch.no_grad():
        x = codec.decode(z.flatten(0, 1)).reshape(*z.shape[:2], 2, -1)[..., :WINDOW].double()
    mixture, total = x[:, 0], x[:, 1:].sum(1)
    snr = 10 * torch.log10(mixture.pow(2).sum() / (mixture - total).pow(2).sum())
    assert snr > 20, f"decode(mixture) vs sum of decoded stems: {snr:.1f} dB"  # measured: 30.9 dB


@pytest.mark.slow
def test_append_after_a_stem_changes_reencodes_its_track_and_keeps_statistics_exact(tmp_path, ray_session):
    """A changed stem file changes its track's windows (the fingerprint covers every stem file):
    --mode append re-encodes them, and the run's statistics (per latent channel, over all stems)
    stay those of the live samples (the superseded stacks are read back and taken out)."""
    import os

    import soundfile as sf
    import webdataset as wds

    from pipeline.config import AudioSettings, EncodeConfig
    from pipeline.runtime import run_encode
    from pipeline.sinks import SinkSpec

    root = musdb_sum_tree(tmp_path / "musdb")
    output = tmp_path / "out"

    def encode(mode: str):
        return run_encode(
            EncodeConfig(
                input=str(root),
                sink=SinkSpec(output=str(output), shard_size=4),
                codec=CODEC,
                audio=AudioSettings(window=WINDOW, sample_rate=RATE),
                mode=mode,
                progress=False,
            )
        )

    assert encode("resume").written == 9
    vocals = root / "train" / "b" / "vocals.wav"
    x, _ = sf.read(vocals, dtype="float32", always_2d=True)
    sf.write(vocals, 0.5 * x, RATE, subtype="FLOAT")
    os.utime(vocals, (1, 1))  # a different mtime whatever the clock's resolution
    appended = encode("append")
    assert (appended.changed, appended.written_this_run) == (3, 3)  # the three windows of train/b
    manifest = json.loads((output / "manifest.json").read_text())
    assert sorted(e["key"] for e in manifest["superseded"]) == [f"train_b_{k:06d}" for k in range(3)]
    shard_of = {s["name"]: s["shard"] for s in manifest["shards"]}
    dropped = {(e["shard"], e["key"]) for e in manifest["superseded"]}
    shards = sorted(str(p) for p in output.glob("*.tar"))
    live = [
        s
        for s in wds.WebDataset(shards, shardshuffle=False, empty_check=False)
        if (shard_of[Path(s["__url__"]).name], s["__key__"]) not in dropped
    ]
    assert len(live) == 9
    bits = manifest["latent"]["bits"]
    z = np.stack([[np.load(io.BytesIO(s[f"{stem}.latent.npy"])) for stem in STEMS] for s in live])
    values = np.moveaxis(z, 2, 0).reshape(108, -1).astype(np.int64)  # per latent channel, all stems
    histogram = [np.bincount(row + 2 ** (bits - 1), minlength=2**bits).tolist() for row in values]
    stats = manifest["statistics"]
    assert (stats["count"], stats["histogram"]) == (9, histogram)
