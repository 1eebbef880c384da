"""Contract C6: every audio window carries `valid_length` (real samples at the codec's rate); the last,
partial window of a file is zero-padded and kept, never dropped; the sample schema accepts the field."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from pipeline.preprocess.audio import AudioPolicy, decode_audio, decode_stems
from pipeline.schemas import SchemaError, validate
from pipeline.sources.audio import AudioFolderSource, MusdbSource

WINDOW = 4096


def write_tone(path, frames: int, rate: int, channels: int = 2) -> np.ndarray:
    t = np.arange(frames) / rate
    x = np.stack([0.5 * np.sin(2 * np.pi * (300 + 100 * c) * t) for c in range(channels)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, rate, subtype="PCM_16")
    return x


@pytest.mark.parametrize(
    ("frames", "source_rate"), [(3 * WINDOW + 1000, 44100), (10_000, 48000), (500, 44100)]
)
def test_every_window_kept_and_last_one_padded_and_marked(tmp_path, frames, source_rate):
    write_tone(tmp_path / "a.wav", frames, source_rate)
    source = AudioFolderSource(str(tmp_path), window=WINDOW, sample_rate=44100)
    items = source.list_items()
    policy = AudioPolicy(sample_rate=44100, window=WINDOW, hop=WINDOW, channels=2)
    length = -(-frames * 44100 // source_rate)  # samples at the codec's rate
    assert len(items) == -(-length // WINDOW)  # the partial tail is a window of its own
    lengths = []
    for item in items:
        decoded = decode_audio(source.read_bytes(item), policy, item.meta)
        n = decoded.meta["valid_length"]
        assert n == item.meta["valid_length"] == decoded.meta["valid"]
        assert decoded.array.shape == (2, WINDOW)
        assert not decoded.array[:, n:].any() and decoded.array[:, :n].any()
        lengths.append(n)
    assert sum(lengths) == length
    assert lengths[:-1] == [WINDOW] * (len(lengths) - 1) and 0 < lengths[-1] <= WINDOW


def test_overlapping_windows_mark_the_tail(tmp_path):
    write_tone(tmp_path / "a.wav", 10_000, 44100)
    items = AudioFolderSource(str(tmp_path), window=WINDOW, hop=WINDOW // 2, sample_rate=44100).list_items()
    assert [i.meta["offset"] for i in items] == [0, 2048, 4096, 6144]
    assert [i.meta["valid_length"] for i in items] == [4096, 4096, 4096, 10_000 - 6144]


def test_musdb_stems_carry_valid_length(tmp_path):
    for stem in ("mixture", "bass", "vocals"):
        write_tone(tmp_path / "train" / "song" / f"{stem}.flac", WINDOW + 123, 44100)
    items = MusdbSource(str(tmp_path), window=WINDOW, group=False).list_items()
    tail = [i for i in items if i.meta["offset"] == WINDOW]
    assert sorted(i.meta["stem"] for i in tail) == ["bass", "mixture", "vocals"]
    assert {i.meta["valid_length"] for i in tail} == {123}
    source = MusdbSource(str(tmp_path), window=WINDOW)  # grouped: one item per window, every stem
    (tail,) = [i for i in source.list_items() if i.meta["offset"] == WINDOW]
    assert tail.meta["stems"] == ["mixture", "bass", "vocals"] and tail.meta["valid_length"] == 123
    policy = AudioPolicy(sample_rate=44100, window=WINDOW, hop=WINDOW, stems=("mixture", "bass", "vocals"))
    decoded = decode_stems(source.read_bytes(tail), policy, tail.meta)
    assert decoded.array.shape == (3, 2, WINDOW) and decoded.meta["valid_length"] == 123
    assert not decoded.array[:, :, 123:].any() and decoded.array[:, :, :123].any()
    # a stem that ends before a window starts is silence in it (the window still decodes)
    write_tone(tmp_path / "train" / "song" / "vocals.flac", 1000, 44100)
    source = MusdbSource(str(tmp_path), window=WINDOW)
    (tail,) = [i for i in source.list_items() if i.meta["offset"] == WINDOW]
    assert tail.meta["stem_files"]["vocals"]["valid"] == 0
    decoded = decode_stems(source.read_bytes(tail), policy, tail.meta)
    assert not decoded.array[2].any() and decoded.array[0, :, :123].any()
    assert decoded.meta["stem_valid"] == [123, 123, 0]


def test_schema_accepts_valid_length_and_refuses_nonsense():
    meta = {"key": "a_000000", "source": "file:///a.wav", "cache_key": "0" * 64, "valid_length": 123}
    validate(meta, "sample.schema.json")
    with pytest.raises(SchemaError, match="valid_length"):
        validate(meta | {"valid_length": -1}, "sample.schema.json")


def test_latent_mask_marks_the_steps_that_hold_signal():
    """The loaders' mask (pipeline.loaders.common.valid_mask) marks ceil(valid_length / 2^J) steps,
    and exactly those the codec fills from real samples: stereo-44k-klt's 1x1 encoder pads one
    frame on each side, so those two edge steps and the steps of the zero padding are masked out."""
    import torch

    from pipeline import codec as wc
    from pipeline.loaders.common import valid_mask

    codec = wc.load("stereo-44k-klt")
    J = codec.config.J
    policy = AudioPolicy(sample_rate=44100, window=WINDOW, hop=WINDOW, channels=2)
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (1000, 2))
    buf = io.BytesIO()
    sf.write(buf, x, 44100, format="WAV", subtype="FLOAT")
    decoded = decode_audio(buf.getvalue(), policy, {"offset": 0})
    steps = codec.latent_shape((2, WINDOW))[-1]
    mask = valid_mask(decoded.meta["valid_length"], steps, J, WINDOW)
    assert int(mask.sum()) == -(-1000 // 2**J)
    assert not mask[0] and not mask[-1]  # the encoder's padding frames
    # alignment: a burst in frame k of the window moves latent step k + 1 most (the encoder's pad)
    block = 2**J
    with torch.no_grad():
        silent = np.zeros((1, 2, WINDOW), dtype=np.float32)
        z0 = codec.encode(torch.from_numpy(silent)).float()
        for k in range(int(mask.sum())):
            burst = silent.copy()
            burst[..., k * block : (k + 1) * block] = np.random.default_rng(k).uniform(-0.5, 0.5, (2, block))
            moved = (codec.encode(torch.from_numpy(burst)).float() - z0).abs().sum(dim=1)[0]
            assert int(moved.argmax()) == int(mask.nonzero()[k])
