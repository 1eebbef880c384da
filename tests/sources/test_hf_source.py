"""hf: save_to_disk folders, DatasetDicts, parquet (row groups), .arrow files, column choice, broken
rows as read/decode errors, and the Hub path (with load_dataset replaced: no network in tests)."""

from __future__ import annotations

import pickle
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import ClassLabel, Dataset, DatasetDict
from datasets import Image as ImageFeature
from source_builders import hf_disk, image_bytes

from pipeline.preprocess.image import DecodeError, ImagePolicy, ImagePreprocessor
from pipeline.runtime.ray_exec import partition_map
from pipeline.sources import detect_source
from pipeline.sources.hf import HFSource, MissingImageError, file_split

NAMES = ["ant", "bee", "cat"]


def _dataset(n: int, seed: int = 0, broken: bool = False) -> Dataset:
    images = [{"bytes": image_bytes(seed + i), "path": None} for i in range(n)]
    labels = [i % 3 for i in range(n)]
    if broken:
        images[1] = None  # a null image
        images[2] = {"bytes": b"not an image at all", "path": None}
    ds = Dataset.from_dict({"image": images, "label": labels, "caption": [f"c{i}" for i in range(n)]})
    return ds.cast_column("image", ImageFeature()).cast_column("label", ClassLabel(names=NAMES))


def test_save_to_disk_columns_labels_and_bytes(tmp_path):
    path, _ = hf_disk(tmp_path)
    source = HFSource(path)
    assert (source.layout, source.split, source.image_column, source.label_column) == (
        "disk",
        "train",
        "image",
        "label",
    )
    assert source.label_map() == {"ant": 0, "bee": 1, "cat": 2}
    items = source.list_items()
    assert [i.key for i in items] == [f"train_{r:08d}" for r in range(5)]
    assert [i.label for i in items] == [0, 1, 2, 1, 0]
    assert items[3].uri == f"{path}#train/3" and items[3].meta["class"] == "bee"
    assert [source.read_bytes(i) for i in items] == [image_bytes(r) for r in range(5)]


def test_broken_rows_fail_per_sample(tmp_path):
    path = tmp_path / "broken"
    _dataset(4, broken=True).save_to_disk(str(path))
    source = HFSource(str(path))
    items = source.list_items()
    pre = ImagePreprocessor(ImagePolicy(size=8))
    assert pre.decode(source.read_bytes(items[0])).array.shape == (3, 8, 8)
    with pytest.raises(MissingImageError, match="row 1 .* no image"):
        source.read_bytes(items[1])
    with pytest.raises(DecodeError):
        pre.decode(source.read_bytes(items[2]))
    assert source.read_bytes(items[3]) == image_bytes(3)


def test_dataset_dict_splits(tmp_path):
    path = tmp_path / "dd"
    DatasetDict({"train": _dataset(3), "validation": _dataset(2, seed=50)}).save_to_disk(str(path))
    assert HFSource(str(path)).split == "train"
    val = HFSource(str(path), split="validation")
    items = val.list_items()
    assert [i.key for i in items] == ["validation_00000000", "validation_00000001"]
    assert val.read_bytes(items[1]) == image_bytes(51)
    with pytest.raises(ValueError, match="no split 'test'"):
        HFSource(str(path), split="test")
    DatasetDict({"a": _dataset(1), "b": _dataset(1)}).save_to_disk(str(tmp_path / "ab"))
    with pytest.raises(ValueError, match="choose one"):
        HFSource(str(tmp_path / "ab"))


def test_parquet_folder_with_row_groups_and_splits(tmp_path):
    root = tmp_path / "pq"
    (root / "data").mkdir(parents=True)
    _dataset(5).to_parquet(str(root / "data" / "train-00000-of-00002.parquet"), batch_size=2)
    _dataset(3, seed=10).to_parquet(str(root / "data" / "train-00001-of-00002.parquet"), batch_size=2)
    _dataset(2, seed=20).to_parquet(str(root / "data" / "test-00000-of-00001.parquet"))
    assert detect_source(str(root)) == "hf"
    source = HFSource(str(root))
    items = source.list_items()
    assert len(items) == 8 and source.label_map() == {"ant": 0, "bee": 1, "cat": 2}
    assert [i.meta["row_group"] for i in items[:5]] == [0, 0, 1, 1, 2]
    assert [i.key for i in items] == [f"train_{r:08d}" for r in range(8)]  # numbered across files
    threads = source.listing(map_fn=partition_map(threading.Event()))  # one partition per file
    assert threads.rows(0, len(threads)) == items and len(source.listing(limit=6)) == 6
    expected = [image_bytes(i) for i in range(5)] + [image_bytes(10 + i) for i in range(3)]
    assert [source.read_bytes(i) for i in items] == expected
    clone = pickle.loads(pickle.dumps(source))
    assert clone.read_bytes(items[6]) == image_bytes(11)
    test = HFSource(str(root), split="test")
    assert [test.read_bytes(i) for i in test.list_items()] == [image_bytes(20), image_bytes(21)]


def test_plain_parquet_columns_by_name(tmp_path):
    table = pa.table({"img": [image_bytes(1), None], "labels": [4, None], "note": ["a", "b"]})
    path = tmp_path / "plain.parquet"
    pq.write_table(table, path)
    source = HFSource(str(path))
    assert (source.image_column, source.label_column, source.label_map()) == ("img", "labels", {})
    items = source.list_items()
    assert [i.label for i in items] == [4, None]
    assert source.read_bytes(items[0]) == image_bytes(1)
    with pytest.raises(MissingImageError):
        source.read_bytes(items[1])
    unlabelled = HFSource(str(path), label_column="")
    assert unlabelled.label_column is None and [i.label for i in unlabelled.list_items()] == [None, None]
    with pytest.raises(ValueError, match="no image column"):
        HFSource(str(path), image_column="nope")


def test_arrow_file_and_images_by_path(tmp_path):
    picture = tmp_path / "pic.png"
    picture.write_bytes(image_bytes(7))
    ds = Dataset.from_dict(
        {"image": [{"bytes": None, "path": str(picture)}, {"bytes": image_bytes(8), "path": None}]}
    )
    ds = ds.cast_column("image", ImageFeature())
    ds.save_to_disk(str(tmp_path / "saved"))
    arrow = next((tmp_path / "saved").glob("*.arrow"))
    assert HFSource.detect(str(arrow))
    source = HFSource(str(arrow))
    assert source.layout == "arrow" and source.label_column is None
    items = source.list_items()
    assert [source.read_bytes(i) for i in items] == [image_bytes(7), image_bytes(8)]


def test_hub_id_goes_through_load_dataset(tmp_path, monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, split=None, revision=None):
        calls.append((name, split, revision))
        return _dataset(2)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert detect_source("hf://datasets/someone/tiny-images") == "hf"
    source = HFSource("hf://datasets/someone/tiny-images", split="train")
    items = source.list_items()
    assert source.layout == "hub" and items[1].uri == "hf://datasets/someone/tiny-images#train/1"
    clone = pickle.loads(pickle.dumps(source))  # a worker loads it again (from the HF cache)
    assert clone.read_bytes(items[1]) == image_bytes(1)
    assert calls[0] == ("someone/tiny-images", "train", None) and len(calls) == 2


def test_file_split():
    assert file_split("data/train-00000-of-00004.parquet") == "train"
    assert file_split("validation/part-0.parquet") == "validation"
    assert file_split("data-00000-of-00001.arrow") == "train"
    assert file_split("cifar10-test.arrow") == "test"


def test_detect_is_not_fooled(tmp_path):
    assert not HFSource.detect(str(tmp_path))
    (tmp_path / "x.parquet").write_bytes(b"")
    assert HFSource.detect(str(tmp_path))
