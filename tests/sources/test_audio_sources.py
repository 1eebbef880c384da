"""audio-folder and musdb: window arithmetic, header-only listing, lossless excerpts that resample
exactly like the whole file, broken files as error rows, MUSDB keys/labels/order."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly
from source_builders import AUDIO_OPTIONS, audio_tree, musdb_tree, write_wav

from pipeline.config import DEFAULT_IMAGE_INPUT, AudioSettings, EncodeConfig
from pipeline.preprocess.audio import AudioPolicy, decode_audio, rate_ratio
from pipeline.preprocess.image import DecodeError
from pipeline.sinks import SinkSpec
from pipeline.sources import detect_source, open_source
from pipeline.sources.audio import (
    AudioFolderSource,
    AudioListingError,
    MusdbSource,
    read_excerpt,
    read_span,
    resampled_length,
    window_offsets,
)


def test_window_arithmetic():
    assert window_offsets(10, 4, 2) == [0, 2, 4, 6]
    assert window_offsets(10, 4, 5) == [0, 5]
    assert window_offsets(8, 4, 4) == [0, 4]
    assert window_offsets(9, 4, 4) == [0, 4, 8]
    assert window_offsets(3, 4, 4) == [0] and window_offsets(0, 4, 4) == [0]
    assert resampled_length(5512, 22050, 16000) == 4000  # ceil(3999.6)
    assert resampled_length(48000, 48000, 44100) == 44100
    for offset, valid in ((0, 2048), (2048, 1952), (40000, 4096)):
        first, end = read_span(offset, valid, 10**6, 48000, 44100)
        up, down = rate_ratio(48000, 44100)
        assert first % down == 0 and first <= offset * down // up
        assert end >= (offset + valid) * down / up + 10


def test_folder_listing_reads_headers_and_windows(tmp_path):
    path, options = audio_tree(tmp_path)
    source = AudioFolderSource(path, **options)
    items = source.list_items()
    keys = [i.key for i in items]
    # a.wav: 4800 @16k -> 3 windows; b.flac: 5512 @22.05k -> 4000 -> 2; c: 1102 @11.025k -> 1600 -> 1
    assert keys == ["a_000000", "a_000001", "a_000002", "b_000000", "b_000001", "deep_c_000000"]
    b1 = items[4].meta
    assert (b1["offset"], b1["valid"], b1["rate"], b1["source_rate"], b1["source_frames"]) == (
        2048,
        1952,
        16000,
        22050,
        5512,
    )
    assert items[-1].meta["valid"] == 1600 and items[-1].meta["source_channels"] == 2
    assert all(i.label is None for i in items) and source.label_map() == {}


def test_folder_listing_in_partitions_equals_one_pass(tmp_path, monkeypatch):
    import threading

    from pipeline.runtime.ray_exec import partition_map
    from pipeline.sources import audio

    path, options = audio_tree(tmp_path)
    write_wav(tmp_path / "audio" / "a.flac", 0.05, 16000, 2)  # its window's key is a.wav's first
    whole = AudioFolderSource(path, **options).list_items()
    monkeypatch.setattr(audio, "PARTITION_FILES", 1)  # one task per file: keys unique across tasks
    source = AudioFolderSource(path, **options)
    parts = source.listing(map_fn=partition_map(threading.Event()))
    assert parts.rows(0, len(parts)) == whole
    keys = [i.key for i in whole]
    assert len(set(keys)) == len(keys) and sum(k.startswith("a_000000_") for k in keys) == 2
    assert [i.key for i in parts.rows(0, len(parts))] == keys
    assert all(i.fingerprint for i in whole)  # size + mtime: what --mode append compares


def test_excerpt_is_lossless_and_keeps_the_format(tmp_path):
    path, options = audio_tree(tmp_path)
    source = AudioFolderSource(path, **options)
    item = source.list_items()[4]  # b.flac, 24-bit, second window
    excerpt = source.read_bytes(item)
    info = sf.info(io.BytesIO(excerpt))
    assert (info.format, info.subtype, info.samplerate) == ("WAV", "PCM_24", 22050)
    first, end = item.meta["read"]
    original, _ = sf.read(f"{path}/b.flac", dtype="int32", start=first, stop=end)
    carried, _ = sf.read(io.BytesIO(excerpt), dtype="int32")
    assert np.array_equal(original, carried)


@pytest.mark.parametrize("source_rate", [48000, 8000, 44100])
def test_windows_match_resampling_the_whole_file(tmp_path, source_rate):
    write_wav(tmp_path / "in" / "x.wav", 0.5, source_rate, 2, "PCM_16", seed=3)
    source = AudioFolderSource(str(tmp_path / "in"), window=4096, sample_rate=44100)
    policy = AudioPolicy(sample_rate=44100, window=4096, hop=4096, channels=2)
    full, _ = sf.read(str(tmp_path / "in" / "x.wav"), dtype="float64", always_2d=True)
    up, down = rate_ratio(source_rate, 44100)
    reference = resample_poly(full.T, up, down, axis=-1) if up != down else full.T
    items = source.list_items()
    assert len(items) == -(-reference.shape[1] // 4096)
    for item in items:
        decoded = decode_audio(source.read_bytes(item), policy, item.meta)
        valid = decoded.meta["valid"]
        window = reference[:, item.meta["offset"] : item.meta["offset"] + valid]
        restored = decoded.array[:, :valid] / decoded.meta["scale"] + np.array(decoded.meta["mean"])[:, None]
        np.testing.assert_allclose(restored, window, atol=2e-6)
        assert not decoded.array[:, valid:].any()


def test_broken_and_empty_files_become_error_rows(tmp_path):
    root = tmp_path / "bad"
    write_wav(root / "ok.wav", 0.05, 16000, 1)
    (root / "garbage.wav").write_bytes(b"RIFF....WAVEnot really")
    sf.write(str(root / "empty.wav"), np.zeros((0, 2)), 16000)
    source = AudioFolderSource(str(root), **AUDIO_OPTIONS)
    items = {i.meta["path"]: i for i in source.list_items()}
    assert set(items) == {"ok.wav", "garbage.wav", "empty.wav"}
    with pytest.raises(AudioListingError, match="unreadable audio file"):
        source.read_bytes(items["garbage.wav"])
    policy = AudioPolicy(sample_rate=16000, window=2048, hop=2048, channels=2)
    with pytest.raises(DecodeError, match="empty audio"):
        decode_audio(source.read_bytes(items["empty.wav"]), policy, items["empty.wav"].meta)
    assert decode_audio(source.read_bytes(items["ok.wav"]), policy, items["ok.wav"].meta).meta["valid"] == 800


def test_class_folders_give_labels(tmp_path):
    write_wav(tmp_path / "dogs" / "a.wav", 0.05, 16000, 1)
    write_wav(tmp_path / "cats" / "b.flac", 0.05, 16000, 1)
    source = AudioFolderSource(str(tmp_path), **AUDIO_OPTIONS)
    assert source.label_map() == {"cats": 0, "dogs": 1}
    assert [(i.key, i.label, i.meta["class"]) for i in source.list_items()] == [
        ("cats_b_000000", 0, "cats"),
        ("dogs_a_000000", 1, "dogs"),
    ]


def test_run_settings_reach_the_source(tmp_path):
    path, _ = audio_tree(tmp_path)
    cfg = EncodeConfig(
        input=path,
        sink=SinkSpec(output="unused"),
        audio=AudioSettings(window=1024, hop=512, sample_rate=16000),
    )
    source = open_source(path, policies=cfg.policies())
    assert (source.window, source.hop, source.sample_rate) == (1024, 512, 16000)
    assert open_source(path, policies=cfg.policies(), window=4096).window == 4096  # explicit options win
    # an image source takes nothing from the audio settings (nor they from it)
    assert open_source(DEFAULT_IMAGE_INPUT, policies=cfg.policies()).registry_name == "image-folder"


def test_musdb_keys_order_labels(tmp_path):
    path, options = musdb_tree(tmp_path)
    assert detect_source(path) == "musdb"
    assert detect_source(f"{path}/train") == "musdb"  # a split folder
    source = MusdbSource(path, group=False, **options)  # one sample per stem
    items = source.list_items()
    # 0.3 s at 22.05 kHz -> 4800 samples at 16 kHz -> 3 windows x 5 stems x 2 tracks
    assert len(items) == 30
    assert [i.key for i in items[:6]] == [
        "test_Other_s_Tune_000000_mixture",
        "test_Other_s_Tune_000000_drums",
        "test_Other_s_Tune_000000_bass",
        "test_Other_s_Tune_000000_other",
        "test_Other_s_Tune_000000_vocals",
        "test_Other_s_Tune_000001_mixture",
    ]
    assert [i.label for i in items[:5]] == [0, 1, 2, 3, 4]
    assert source.label_map() == {"mixture": 0, "drums": 1, "bass": 2, "other": 3, "vocals": 4}
    meta = items[7].meta
    assert (meta["split"], meta["track"], meta["stem"], meta["offset"]) == (
        "test",
        "Other's Tune",
        "bass",
        2048,
    )
    train = MusdbSource(path, split="train", stems=["mixture", "vocals"], group=False, **options).list_items()
    assert [i.key for i in train[:2]] == [
        "train_A_Band_-_Song_000000_mixture",
        "train_A_Band_-_Song_000000_vocals",
    ]
    assert len(train) == 6
    split_folder = MusdbSource(f"{path}/train", **options).list_items()
    assert [i.key for i in split_folder] == [
        i.key for i in MusdbSource(path, split="train", **options).list_items()
    ]
    with pytest.raises(ValueError, match="unknown stems"):
        MusdbSource(path, stems=["piano"], **options)


def test_musdb_groups_every_stem_of_a_window_in_one_item(tmp_path):
    import io
    import tarfile

    path, options = musdb_tree(tmp_path)
    source = MusdbSource(path, **options)
    assert source.grouped_stems() == ("mixture", "drums", "bass", "other", "vocals")
    assert source.label_map() == {}
    items = source.list_items()
    assert [i.key for i in items[:4]] == [  # 3 windows x 2 tracks, one item each
        "test_Other_s_Tune_000000",
        "test_Other_s_Tune_000001",
        "test_Other_s_Tune_000002",
        "train_A_Band_-_Song_000000",
    ]
    assert len(items) == 6 and all(i.label is None for i in items)
    meta = items[1].meta
    assert meta["stems"] == list(source.stems) and meta["offset"] == 2048
    assert sorted(meta["stem_files"]) == sorted(source.stems)
    with tarfile.open(fileobj=io.BytesIO(source.read_bytes(items[1]))) as tar:
        names = tar.getnames()
        excerpt = tar.extractfile("vocals.wav").read()
    assert names == [f"{s}.wav" for s in source.stems]
    first, end = meta["stem_files"]["vocals"]["read"]
    assert excerpt == read_excerpt(meta["stem_files"]["vocals"]["url"], first, end)
    # a track that lacks an asked-for stem: its windows fail to read, with the reason
    (tmp_path / "musdb" / "test" / "Other's Tune" / "drums.wav").unlink()
    assert MusdbSource(path, **options).stems == ("mixture", "bass", "other", "vocals")  # default: common
    asked = MusdbSource(path, stems=["mixture", "drums"], **options)
    broken = [i for i in asked.list_items() if i.meta["track"] == "Other's Tune"]
    with pytest.raises(AudioListingError, match="no drums stem"):
        asked.read_bytes(broken[0])


def test_audio_folder_does_not_claim_musdb_or_images(tmp_path):
    path, _ = musdb_tree(tmp_path)
    assert not AudioFolderSource.detect(path)
    assert not AudioFolderSource.detect("pipeline/samples/images")
    assert not MusdbSource.detect("pipeline/samples/audio")
    assert detect_source("pipeline/samples/audio") == "audio-folder"
