"""Audio preprocessing on real encoded files: every PCM width and float, odd rates, mono/stereo/5.1,
the resampler (scipy and the numpy fallback), the channel policy, normalisation and its inverse."""

from __future__ import annotations

import io
import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from pipeline.codec import CodecConfig, build
from pipeline.config import AudioSettings
from pipeline.preprocess import audio as audio_mod
from pipeline.preprocess.audio import (
    AudioPolicy,
    AudioPreprocessor,
    decode_audio,
    map_channels,
    rate_ratio,
    resample,
    resample_numpy,
)
from pipeline.preprocess.factory import make_preprocessor
from pipeline.preprocess.image import DecodeError

WINDOW = 4096


def encode(x: np.ndarray, rate: int, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    """(frames, channels) float in [-1, 1] -> file bytes."""
    out = io.BytesIO()
    sf.write(out, x, rate, subtype=subtype, format=fmt)
    return out.getvalue()


def tone(seconds: float, rate: int, channels: int, freq: float = 1000.0, dc: float = 0.0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    x = np.stack([0.6 * np.sin(2 * np.pi * freq * t + c) for c in range(channels)], axis=1)
    return np.clip(x + dc, -1, 1)


def policy(
    channels: int = 2, rate: int = 44100, window: int = WINDOW, channel_policy: str = "refuse"
) -> AudioPolicy:
    return AudioPolicy(
        sample_rate=rate, window=window, hop=window, channels=channels, channel_policy=channel_policy
    )


def dominant_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


@pytest.mark.parametrize(
    ("fmt", "subtype", "rate"),
    [
        ("WAV", "PCM_U8", 8000),
        ("WAV", "PCM_16", 11025),
        ("WAV", "PCM_24", 22050),
        ("WAV", "PCM_32", 44100),
        ("WAV", "FLOAT", 48000),
        ("WAV", "DOUBLE", 96000),
        ("FLAC", "PCM_S8", 16000),
        ("FLAC", "PCM_24", 32000),
        ("OGG", "VORBIS", 24000),
    ],
)
def test_formats_and_rates(fmt, subtype, rate):
    data = encode(tone(0.2, rate, 2), rate, subtype, fmt)
    decoded = decode_audio(data, policy())
    x, meta = decoded.array, decoded.meta
    assert x.shape == (2, WINDOW) and x.dtype == np.float32
    assert np.abs(x).max() == pytest.approx(0.5, abs=1e-6)
    assert meta["valid"] == WINDOW and meta["source_rate"] == rate and meta["sample_rate"] == 44100
    assert dominant_hz(x[0].astype(np.float64), 44100) == pytest.approx(1000, abs=44100 / WINDOW)
    json.dumps(meta)


def test_mono_is_duplicated_and_partial_window_padded():
    decoded = decode_audio(encode(tone(0.05, 44100, 1), 44100), policy())
    x, meta = decoded.array, decoded.meta
    assert meta["channel_op"] == "duplicate" and meta["channels_in"] == 1
    assert np.array_equal(x[0], x[1])
    assert meta["valid"] == 2205 and not x[:, 2205:].any()


def test_normalisation_is_invertible():
    original = tone(0.1, 44100, 2, dc=0.1)
    data = encode(original, 44100, "PCM_24")
    decoded = decode_audio(data, policy())
    meta = decoded.meta
    restored = decoded.array / meta["scale"] + np.array(meta["mean"])[:, None]
    source, _ = sf.read(io.BytesIO(data), dtype="float64", always_2d=True)
    np.testing.assert_allclose(restored, source.T[:, :WINDOW], atol=1e-6)
    assert meta["mean"][0] == pytest.approx(source[:WINDOW, 0].mean())
    assert np.abs(decoded.array.mean(axis=1)).max() < 1e-6


def test_silence_stays_finite():
    decoded = decode_audio(encode(np.zeros((5000, 2)), 44100), policy())
    assert not decoded.array.any() and np.isfinite(decoded.meta["scale"])


def test_surround_is_refused_or_downmixed():
    x = tone(0.1, 44100, 6)
    data = encode(x, 44100, "FLOAT")
    with pytest.raises(DecodeError, match="6 channels; the codec takes 2.*downmix"):
        decode_audio(data, policy())
    decoded = decode_audio(data, policy(channel_policy="downmix"))
    assert decoded.meta["channel_op"] == "downmix" and decoded.array.shape == (2, WINDOW)
    a = 1 / np.sqrt(2)
    left = x[:WINDOW, 0] + a * x[:WINDOW, 2] + a * x[:WINDOW, 4]
    left = left - left.mean()
    np.testing.assert_allclose(decoded.array[0] / decoded.meta["scale"], left, atol=1e-5)
    mono = decode_audio(data, policy(channels=1, channel_policy="downmix"))
    assert mono.array.shape == (1, WINDOW)
    with pytest.raises(DecodeError, match="no downmix for 10 channels"):
        map_channels(np.zeros((10, 4)), 2, "downmix")
    with pytest.raises(DecodeError, match="2 channels; the codec takes 1"):
        decode_audio(encode(tone(0.01, 44100, 2), 44100), policy(channels=1))
    with pytest.raises(DecodeError, match="codec takes 4"):
        map_channels(np.zeros((2, 4)), 4, "downmix")


def test_bad_inputs_are_decode_errors():
    nan = tone(0.01, 44100, 2)
    nan[10, 1] = np.nan
    with pytest.raises(DecodeError, match="NaN/inf"):
        decode_audio(encode(nan, 44100, "FLOAT"), policy())
    inf = tone(0.01, 44100, 2)
    inf[3, 0] = np.inf
    with pytest.raises(DecodeError, match="NaN/inf"):
        decode_audio(encode(inf, 44100, "DOUBLE"), policy())
    with pytest.raises(DecodeError, match="empty audio"):
        decode_audio(encode(np.zeros((0, 2)), 44100), policy())
    with pytest.raises(DecodeError, match="empty file"):
        decode_audio(b"", policy())
    with pytest.raises(DecodeError, match="not a readable audio file"):
        decode_audio(b"RIFF\x00\x00\x00\x00WAVEjunk", policy())
    with pytest.raises(DecodeError, match="outside the audio"):
        decode_audio(encode(tone(0.01, 44100, 2), 44100), policy(), {"offset": 10**6})


def test_items_listed_for_other_settings_are_refused():
    data = encode(tone(0.01, 44100, 2), 44100)
    with pytest.raises(ValueError, match="listed for 1024-sample windows"):
        decode_audio(data, policy(), {"window": 1024, "rate": 44100, "offset": 0})


@pytest.mark.parametrize(
    ("source_rate", "rate"), [(48000, 44100), (8000, 44100), (44100, 16000), (11025, 44100)]
)
def test_numpy_resampler_matches_scipy(source_rate, rate):
    up, down = rate_ratio(source_rate, rate)
    x = np.random.default_rng(1).standard_normal((2, 3001))
    expected = resample_poly(x, up, down, axis=-1)
    np.testing.assert_allclose(resample_numpy(x, up, down), expected, atol=1e-12)


def test_fallback_without_scipy(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.signal", None)  # import fails as if scipy were absent
    x = np.random.default_rng(2).standard_normal((1, 999))
    np.testing.assert_allclose(resample(x, 147, 160), resample_poly(x, 147, 160, axis=-1), atol=1e-12)
    decoded = decode_audio(encode(tone(0.2, 48000, 2), 48000, "PCM_16"), policy())
    assert dominant_hz(decoded.array[0].astype(np.float64), 44100) == pytest.approx(1000, abs=11)


@pytest.mark.parametrize(
    ("source_rate", "freq", "passed"), [(96000, 30000, False), (96000, 26000, False), (48000, 20000, True)]
)
def test_resampling_filters_what_would_alias(source_rate, freq, passed):
    """Tones above the target's Nyquist (22.05 kHz) are removed, audible ones kept (the cutoff sits
    at Nyquist with the transition band around it, as in scipy's default: within ~1 kHz of it,
    content is only partly attenuated)."""
    t = np.arange(source_rate // 4) / source_rate
    y = audio_mod.resample(0.5 * np.sin(2 * np.pi * freq * t)[None, :], *rate_ratio(source_rate, 44100))
    peak = np.abs(y[0, 500:-500]).max()
    assert peak > 0.4 if passed else peak < 0.01


def test_preprocessor_from_settings_and_runtime_registry():
    codec = build(CodecConfig(kind="1d", channels=2, J=4, latent_dim=4, Nd=8, decoder="linear"))
    audio = AudioSettings(window=2048, hop=1024, sample_rate=22050, channel_policy="downmix")
    pre = make_preprocessor("audio", codec, audio=audio)
    assert isinstance(pre, AudioPreprocessor)
    assert pre.fixed_shape() == (2, 2048) and pre.policy.hop == 1024
    assert pre.policy.channel_policy == "downmix" and pre.policy.sample_rate == 22050
    json.dumps(pre.to_dict())
    item = SimpleNamespace(meta={"offset": 0, "window": 2048, "rate": 22050, "read": [0, 2000]})
    decoded = pre.decode(encode(tone(0.1, 22050, 1), 22050), item)
    assert pre.codec_input(decoded.array).dtype == np.float32 and pre.input_size(decoded.array) == (2048,)
    image_codec = SimpleNamespace(config=CodecConfig(kind="2d", channels=3, J=2, latent_dim=4, Nd=8))
    with pytest.raises(ValueError, match="1-D codec"):
        AudioPreprocessor.from_settings(audio, image_codec)
