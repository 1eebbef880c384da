"""Folder-style sources list every file they take and count every other one by reason: the manifest's
`source.skipped` (describe()) and the run's summary. Nothing under an input is silently dropped."""

from __future__ import annotations

from pathlib import Path

import pytest
from source_builders import image_bytes, musdb_tree, raster_tree, wds_shards, write_tar, write_wav

from pipeline.sources import open_source

pytest.importorskip("soundfile")

AUDIO = {"window": 2048, "sample_rate": 16000}


def _files(root: str | Path) -> int:
    return sum(1 for p in Path(root).rglob("*") if p.is_file())


def _accounted(source, listed: int) -> None:
    """Listed + skipped = every file under the input."""
    assert listed + sum(source.describe().get("skipped", {}).values()) == _files(source.root)


def test_audio_folder_counts_what_is_not_audio(tmp_path):
    root = tmp_path / "audio"
    write_wav(root / "cats" / "a.wav", 0.2, 16000, 2)
    write_wav(root / "dogs" / "b.flac", 0.2, 16000, 1)
    (root / "cats" / "notes.txt").write_text("x")
    (root / "dogs" / "cover.jpg").write_bytes(image_bytes(0, "JPEG"))
    (root / "dogs" / "LICENSE").write_text("x")
    source = open_source(str(root), "audio-folder", **AUDIO)
    assert source.describe()["skipped"] == {"extension .jpg": 1, "extension .txt": 1, "no extension": 1}
    _accounted(source, len({it.meta["path"] for it in source.list_items()}))


def test_audio_folder_without_strays_records_no_skipped(tmp_path):
    root = tmp_path / "audio"
    write_wav(root / "a.wav", 0.2, 16000, 2)
    assert "skipped" not in open_source(str(root), "audio-folder", **AUDIO).describe()


def test_musdb_counts_stray_files_unasked_splits_and_stems(tmp_path):
    path, options = musdb_tree(tmp_path)  # train/A Band - Song, test/Other's Tune: five stems each
    root = Path(path)
    track = root / "train" / "A Band - Song"
    (track / "lyrics.txt").write_text("x")
    write_wav(track / "accordion.wav", 0.1, 22050, 2)
    write_wav(track / "mixture.flac", 0.1, 22050, 2)  # a second mixture: one of the two is listed
    write_wav(track / "extra" / "take2.wav", 0.1, 22050, 2)
    write_wav(root / "train" / "No Mixture" / "vocals.wav", 0.1, 22050, 2)
    (root / "train" / "index.csv").write_text("x")
    (root / "README.md").write_text("x")
    source = open_source(path, "musdb", split="train", stems=["mixture", "vocals"], group=False, **options)
    items = source.list_items()
    assert sorted({it.meta["stem"] for it in items}) == ["mixture", "vocals"]
    assert len({it.uri for it in items if it.meta["stem"] == "mixture"}) == 1
    assert source.describe()["skipped"] == {
        "a second mixture file in its track folder": 1,
        "extension .txt": 1,
        "in a folder inside a track folder": 1,
        "not a MUSDB stem (accordion)": 1,
        "not in a split folder": 1,
        "not in a track folder": 1,
        "split test not asked for": 5,
        "stem bass not asked for": 1,
        "stem drums not asked for": 1,
        "stem other not asked for": 1,
        "track folder without a mixture": 1,
    }
    _accounted(source, len({it.uri for it in items}))


def test_musdb_grouped_counts_stems_not_every_track_has(tmp_path):
    path, options = musdb_tree(tmp_path)
    (Path(path) / "test" / "Other's Tune" / "drums.wav").unlink()  # so drums is not a common stem
    source = open_source(path, "musdb", **options)
    assert source.stems == ("mixture", "bass", "other", "vocals")
    assert source.describe()["skipped"] == {"stem drums not in every track": 1}
    listed = {f["url"] for it in source.list_items() for f in it.meta["stem_files"].values()}
    _accounted(source, len(listed))


def test_raster_folder_counts_what_is_not_a_tiff(tmp_path):
    path, _ = raster_tree(tmp_path)
    (Path(path) / "forest" / "tile_0.tfw").write_text("world file")
    (Path(path) / "river" / "preview.png").write_bytes(image_bytes(1))
    source = open_source(path, "raster")
    assert source.describe()["skipped"] == {"extension .png": 1, "extension .tfw": 1}
    _accounted(source, len(source.list_items()))


def test_tar_shards_count_members_that_are_not_samples(tmp_path):
    path, _ = wds_shards(tmp_path)  # 4 images, 3 label members read
    shards = Path(path)
    write_tar(
        shards / "train-000002.tar",
        [
            ("n03_0001.jpg", image_bytes(5, "JPEG")),
            ("n03_0001.txt", b"a caption"),
            ("n03_0001.cls", b"not a number"),
            ("n03_0002.seg.npy", b"\x93NUMPY"),
        ],
    )
    (shards / "README").write_text("x")  # a file of the folder that is not a shard
    source = open_source(path, "wds-tars")
    items = source.list_items()
    assert len(items) == 5
    assert source.describe()["skipped"] == {
        "no extension": 1,
        "tar member .cls not used as a label": 1,
        "tar member extension .npy": 1,
        "tar member extension .txt": 1,
    }
    # counted per shard (each shard is a partition of the listing, maybe a Ray task): known once
    # listed, the same whichever way the partitions ran (a resumed run keeps them with its listing)
    fresh = open_source(path, "wds-tars")
    assert "skipped" not in fresh.describe()
    fresh.listing(map_fn=lambda fn, args: [fn(*a) for a in reversed(args)][::-1])
    assert fresh.describe() == source.describe()
