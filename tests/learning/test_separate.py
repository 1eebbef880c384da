"""The separation job: SI-SDR, the stem builder (scripts/make_stems.py) on a tiny score with a real
SoundFont built in memory, the waveform fold of the baseline, and a tiny end-to-end run (encode on a
local Ray, both arms, one epoch, the report)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_soundfont import build_sf2

from pipeline.learning.loop import weighted_mse
from pipeline.learning.models import count_parameters
from pipeline.learning.separate import STEMS, LatentNorm, SeparateConfig, Separator1d, WaveFold
from pipeline.metrics import si_sdr, si_sdr_batch

REPO = Path(__file__).resolve().parents[2]


def make_stems_module():
    spec = importlib.util.spec_from_file_location("make_stems", REPO / "scripts" / "make_stems.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_stems", module)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------------------
# SI-SDR


def test_si_sdr_identical_is_very_high_and_scale_invariant():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(2, 4000))
    assert si_sdr(ref, ref) > 100
    noisy = ref + 0.1 * rng.normal(size=ref.shape)
    base = si_sdr(ref, noisy)  # (reference, estimate), as every metric in pipeline.metrics
    assert si_sdr(ref, 3.7 * noisy) == pytest.approx(base, abs=1e-9)
    assert si_sdr(ref, -0.01 * noisy) == pytest.approx(si_sdr(ref, -noisy), abs=1e-9)
    assert si_sdr(ref, noisy + 5.0) == pytest.approx(base, abs=1e-9)  # the mean is removed


def test_si_sdr_of_orthogonal_noise_is_the_energy_ratio():
    n = 4096
    t = np.arange(n)
    ref = np.sin(2 * np.pi * 8 * t / n)
    noise = 0.25 * np.sin(2 * np.pi * 21 * t / n)  # orthogonal to ref over whole periods
    assert si_sdr(ref, ref + noise) == pytest.approx(10 * np.log10(1 / 0.25**2), abs=1e-6)
    assert si_sdr(ref, noise) < -100  # nothing of the reference in it


def test_si_sdr_edge_cases():
    assert np.isnan(si_sdr(np.zeros(100), np.ones(100)))  # silent reference: undefined
    with pytest.raises(ValueError, match="shape"):
        si_sdr(np.ones(10), np.ones(11))
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(3, 2, 1000))
    est = ref.copy()
    est[:, :, 600:] = 0  # wrong only past each item's valid length
    assert (si_sdr_batch(ref, est, np.array([600, 600, 600])) > 100).all()
    assert (si_sdr_batch(ref, est) < 10).all()
    # per channel (codec evaluation): a silent channel is left out of the mean
    two = np.stack([ref[0, 0], np.zeros(1000)])
    assert si_sdr(two, two, per_channel=True) > 100 and si_sdr(two, two) > 100


# ---------------------------------------------------------------------------------------------------------
# Stem builder


def tiny_voices(ms, seconds: float, seed: int):
    """Four hand-written lines (no score parser needed): a melody, two inner voices and a bass."""
    rng = np.random.default_rng(seed)
    lines = {"soprano": (72, 0), "alto": (64, 1), "tenor": (57, 2), "bass": (45, 1)}
    voices = []
    for role, (base, program) in lines.items():
        notes, t = [], 0.0
        while t < seconds:
            d = float(rng.choice([0.25, 0.5]))
            notes.append(ms.Note(t, d, int(base + rng.choice([0, 2, 4, 5, 7])), 90))
            t += d
        voices.append(ms.Voice(role, ms.VOICE_STEM[role], program, ms.PAN[role], notes))
    return voices


def test_render_track_sums_stems_and_writes_a_musdb_tree(tmp_path):
    pytest.importorskip("tinysoundfont")
    import soundfile as sf

    from pipeline.sources.audio import MusdbSource

    ms = make_stems_module()
    sf2 = build_sf2()
    signals = ms.render_track(sf2, tiny_voices(ms, 1.0, 0))
    assert set(signals) == {"mixture", *STEMS}
    assert np.abs(signals["mixture"] - sum(signals[s] for s in STEMS)).max() < 1e-9
    assert np.abs(signals["mixture"]).max() == pytest.approx(ms.PEAK)
    assert all(np.abs(signals[s]).max() > 0.01 for s in STEMS)  # every stem sounds
    digests = ms.write_track(tmp_path / "train" / "t0", signals)
    ms.write_track(tmp_path / "test" / "t1", ms.render_track(sf2, tiny_voices(ms, 0.5, 1)))
    back, rate = sf.read(tmp_path / "train" / "t0" / "mixture.flac", always_2d=True)
    assert rate == 44100 and back.shape == (signals["mixture"].shape[1], 2)
    assert np.abs(back.T - signals["mixture"]).max() < 2**-22  # 24-bit FLAC
    assert len(set(digests.values())) == 4
    items = MusdbSource(str(tmp_path), window=2**14).list_items()  # one item per window, every stem
    assert {i.meta["split"] for i in items} == {"train", "test"}
    assert all(sorted(i.meta["stems"]) == sorted(("mixture", *STEMS)) for i in items)


def test_voice_rendering_is_the_voice_alone():
    pytest.importorskip("tinysoundfont")
    ms = make_stems_module()
    sf2 = build_sf2()
    voice = ms.Voice("bass", "bass", 0, 64, [ms.Note(0.5, 0.25, 69, 100)])
    x = ms.render_voice(sf2, voice, 44100)
    assert x.shape == (2, 44100) and not x[:, : 22050 - 1].any()  # silent before the note
    spectrum = np.abs(np.fft.rfft(x[0, 22050 : 22050 + 8192] * np.hanning(8192)))
    assert np.fft.rfftfreq(8192, 1 / 44100)[spectrum.argmax()] == pytest.approx(440, abs=6)
    assert np.array_equal(x, ms.render_voice(sf2, voice, 44100))  # deterministic, no state kept


def test_score_voices_from_a_tiny_music21_score():
    music21 = pytest.importorskip("music21")
    ms = make_stems_module()
    score = music21.stream.Score()
    for name, pitches in (("Soprano", "C5 D5"), ("Alto", "E4 F4"), ("Tenor", "G3 A3"), ("Bass", "C3 D3")):
        part = music21.stream.Part()
        part.partName = name
        first, second = (music21.note.Note(p, quarterLength=1.0) for p in pitches.split())
        tied = music21.note.Note(first.pitch, quarterLength=1.0)
        first.tie, tied.tie = music21.tie.Tie("start"), music21.tie.Tie("stop")
        part.append([first, tied, second])
        score.insert(0, part)
    assert ms.is_satb(score)
    voices = ms.score_voices(score, tempo_bpm=120, rng=np.random.default_rng(0))
    assert [v.stem for v in voices] == ["vocals", "other", "other", "bass"]
    soprano = voices[0].notes
    assert [(n.start, n.duration, n.key) for n in soprano] == [(0.0, 1.0, 72), (1.0, 0.5, 74)]  # tie merged
    assert all(v.program in ms.PROGRAMS[v.name] for v in voices)
    score.remove(score.parts[3])
    assert not ms.is_satb(score)


# ---------------------------------------------------------------------------------------------------------
# Baseline fold and the network


def test_wave_fold_matches_the_latent_size_and_inverts_in_band():
    fold = WaveFold(channels=2, latent_channels=108, window=2**16, J=8)
    assert (fold.up, fold.down) == (27, 128) and round(fold.rate) == 9302
    t = np.arange(2**16) / 44100
    x = np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 1234 * t)])
    y = fold.fold(x)
    assert y.shape == (108, 256)
    assert np.allclose(y[0], fold.fold(x)[0])
    back = fold.unfold(y)
    assert back.shape == x.shape
    assert si_sdr(back[:, 2000:-2000], x[:, 2000:-2000]) > 40  # in band: kept
    high = np.sin(2 * np.pi * 9000 * t)[None].repeat(2, 0)
    assert np.abs(fold.unfold(fold.fold(high))[:, 2000:-2000]).max() < 0.01  # above 4.65 kHz: gone


def test_the_full_rate_fold_is_exact():
    fold = WaveFold(channels=2, latent_channels=2 << 8, window=2**12, J=8)
    assert (fold.up, fold.down) == (1, 1) and fold.phases == 256 and fold.steps == 16
    x = np.random.default_rng(0).standard_normal((3, 2, 2**12))
    y = fold.fold(x)
    assert y.shape == (3, 512, 16)
    assert np.array_equal(y[:, 5, 2], x[:, 0, 2 * 256 + 5])  # phase 5 of step 2 of channel 0
    np.testing.assert_allclose(fold.unfold(y), x, atol=1e-12)


def test_separator_maps_channels_to_stems_times_channels():
    net = Separator1d(channels=108, stems=3, width=16, blocks=2)
    assert net(torch.zeros(2, 108, 258)).shape == (2, 3 * 108, 258)
    assert net(torch.zeros(2, 108, 256)).shape == (2, 3 * 108, 256)


def test_mix_stem_mixes_channels_per_step_and_keeps_the_size_close():
    conv = Separator1d(channels=108, stems=3, width=64, blocks=4, stem="conv")
    mix = Separator1d(channels=108, stems=3, width=64, blocks=4, stem="mix")
    assert mix(torch.zeros(2, 108, 258)).shape == (2, 3 * 108, 258)
    assert mix.stem[0].kernel_size == (1,) and mix.stem[0].in_channels == 108  # channel mixing first
    assert mix.stem[-1].kernel_size == (3,) and mix.stem[-1].in_channels == 64
    assert count_parameters(conv) == 109_060  # the figure docs/learning-audio.md quotes
    assert count_parameters(mix) == 107_716  # 1x1 108->64 + BN + 3-tap 64->64 vs 3-tap 108->64
    for stem, params in (("mixlin", 107_716), ("mixres", 116_392)):
        net = Separator1d(channels=108, stems=3, width=64, blocks=4, stem=stem)
        assert net(torch.zeros(2, 108, 258)).shape == (2, 3 * 108, 258)
        assert count_parameters(net) == params
    res = Separator1d(channels=108, stems=3, width=64, blocks=4, stem="mixres").stem[0]
    x = torch.randn(2, 108, 9)
    torch.nn.init.zeros_(res.body[-1].weight), torch.nn.init.zeros_(res.body[-1].bias)
    assert torch.equal(res(x), x)  # residual: the channel mix adds to the input, it does not replace it
    with pytest.raises(ValueError, match="stem"):
        Separator1d(channels=8, stems=3, width=4, blocks=1, stem="fft")
    assert (SeparateConfig().latent_norm, SeparateConfig().latent_stem) == ("scalar", "conv")  # measured
    with pytest.raises(ValueError, match="latent_stem"):
        SeparateConfig(latent_stem="fft")
    with pytest.raises(ValueError, match="latent_norm"):
        SeparateConfig(latent_norm="batch")


MEAN = [0.5, -2.0, 0.0, 3.0]  # a run manifest's per-channel statistics (dequantized), 4 channels
STD = [4.0, 100.0, 10.0, 0.5]


@pytest.fixture
def manifest_norm(monkeypatch) -> LatentNorm:
    """LatentNorm.from_run on a run whose manifest holds MEAN / STD (read through the same
    RunInfo -> channel_stats path as a real run; only the file reading is replaced)."""
    from pipeline.learning import data
    from pipeline.loaders import RunInfo

    stats = {"dequantized_mean": MEAN, "dequantized_std": STD, "mean": [0] * 4, "std": [1] * 4}
    monkeypatch.setattr(data, "run_info", lambda root: RunInfo(root=root, manifest={"statistics": stats}))
    return LatentNorm.from_run("run")


def test_latent_norm_uses_the_manifest_statistics(manifest_norm):
    mean, std = torch.tensor(MEAN)[:, None], torch.tensor(STD)[:, None]
    assert torch.equal(manifest_norm.x_mean, mean) and torch.equal(manifest_norm.x_std, std)
    assert torch.equal(manifest_norm.y_std, std)  # one scale per channel, shared by mixture and stems
    z = torch.randn(2, 4, 7) * std + mean
    x = manifest_norm.inputs(z)
    assert torch.allclose(x, (z - mean) / std)
    assert torch.allclose(x.mean(dim=(0, 2)), (z.mean(dim=(0, 2)) - mean[:, 0]) / std[:, 0], atol=1e-6)


def test_latent_norm_keeps_the_mixture_the_sum_of_the_stems(manifest_norm):
    torch.manual_seed(0)
    std = torch.tensor(STD)[:, None]
    stems = torch.randn(3, len(STEMS), 4, 9) * std  # (B, S, C, T): each stem at its share
    mixture = stems.sum(dim=1)
    y = manifest_norm.targets(stems)  # (B, S * C, T)
    assert y.shape == (3, len(STEMS) * 4, 9)
    # sum of the scaled stems = the scaled mixture before its mean is removed: only the input is centred
    summed = y.reshape(3, len(STEMS), 4, 9).sum(dim=1)
    assert torch.allclose(summed, manifest_norm.inputs(mixture) + manifest_norm.x_mean / manifest_norm.x_std)
    # and the model's output times y_scale is what the codec decodes: the stem latents themselves
    assert torch.allclose(y * manifest_norm.y_scale(len(STEMS)), stems.flatten(1, 2), rtol=1e-5, atol=1e-4)


def test_latent_norm_loss_is_the_unscaled_latent_error(manifest_norm):
    torch.manual_seed(1)
    S = len(STEMS)
    scale = manifest_norm.y_scale(S)
    pred, target = torch.randn(2, S * 4, 5), torch.randn(2, S * 4, 5)
    raw = torch.nn.functional.mse_loss(pred * scale, target * scale)  # error in latent units
    assert torch.allclose(manifest_norm.loss(S)(pred, target), raw / (scale**2).mean())


def test_scalar_norm_is_the_old_rule():
    x, y = torch.randn(4, 3, 8) * 5, torch.randn(4, 2, 3, 8) * 2
    norm = LatentNorm.scalar([(x, y)])
    assert torch.allclose(norm.inputs(x), x / x.std())
    assert torch.allclose(norm.targets(y), y.flatten(1, 2) / y.std())
    assert norm.loss(2) is torch.nn.functional.mse_loss


def test_weighted_mse_weights_each_channel_in_1d_and_2d():
    w = torch.tensor([1.0, 3.0])
    for shape in ((2, 2, 5), (2, 2, 3, 3)):
        pred, target = torch.zeros(shape), torch.ones(shape)
        target[:, 1] = 2.0
        # channel 0: error 1, weight 0.5; channel 1: error 4, weight 1.5 -> mean (0.5 + 6) / 2
        assert torch.isclose(weighted_mse(w)(pred, target), torch.tensor(3.25))


# ---------------------------------------------------------------------------------------------------------
# End to end


@pytest.mark.slow
def test_tiny_end_to_end_run(tmp_path):
    pytest.importorskip("tinysoundfont")
    sys.path.insert(0, str(REPO / "jobs"))
    import learn_separate

    ms = make_stems_module()
    sf2 = build_sf2()
    stems = tmp_path / "stems"
    for split, k, seconds in (("train", 0, 2.5), ("train", 1, 2.0), ("test", 2, 1.6)):
        ms.write_track(stems / split / f"t{k}", ms.render_track(sf2, tiny_voices(ms, seconds, k)))
    out = tmp_path / "run"
    argv = ["--stems", str(stems), "--output", str(out), "--window", "16384", "--epochs", "1"]
    argv += ["--width", "16", "--blocks", "1", "--batch-size", "4", "--device", "cpu", "--workers", "1"]
    argv += ["--latent-norm", "channel", "--latent-stem", "mixres"]  # the run's manifest statistics, for real
    assert learn_separate.main([*argv, "--no-progress"]) == 0
    for name in ("report.md", "report.json", "curves.png", "spectrogram.png"):
        assert (out / name).stat().st_size > 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["arms"]) == {"latent", "waveform", "full"}
    for arm in report["arms"].values():
        assert np.isfinite(arm["final"]["si_sdr"]) and arm["samples_per_s"] > 0
        assert {f"si_sdr_{s}" for s in STEMS} <= set(arm["final"])
        assert len(arm["history"]) == 1
    assert report["arms"]["latent"]["input_shape"] == [108, 66]
    assert report["arms"]["waveform"]["input_shape"] == [108, 64]
    assert report["arms"]["full"]["input_shape"] == [512, 64]  # 2 x 16384 samples, every one
    assert report["config"]["latent_norm"] == "channel" and report["config"]["latent_stem"] == "mixres"
    assert report["arms"]["latent"]["params"] - report["arms"]["waveform"]["params"] == 7_332  # ChannelMix
    ceiling = report["extra"]["latent ceiling (true stem latents decoded) si_sdr"]
    assert ceiling > report["extra"]["mixture as estimate si_sdr"]
    # C6 end to end: the pipeline's samples carry valid_length, the last window of a track is partial;
    # every sample holds the mixture and all stems of its window (read with the stock loader)
    from pipeline.loaders import LatentWebDataset

    data = LatentWebDataset(str(out / "latents" / "test"), with_meta=True, shuffle_shards=False)
    assert data.info.stems == ["mixture", "bass", "other", "vocals"]
    from pipeline.learning.separate import latents_and_meta

    items = [latents_and_meta(item) for item in data]
    assert all(z.shape == (4, 108, 66) for z, _ in items)
    metas = [meta for _, meta in items]
    last = max(metas, key=lambda m: m["offset"])
    assert 0 < last["valid_length"] < 16384
    assert sum(m["valid_length"] for m in metas) == round(
        float(ms.render_track(sf2, tiny_voices(ms, 1.6, 2))["mixture"].shape[1])
    )
