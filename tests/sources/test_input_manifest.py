"""Input manifests: a parquet or CSV file of paths/URLs, optional labels and keys."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from pipeline.config import DEFAULT_IMAGE_INPUT
from pipeline.sources import detect_source, open_source

PHOTOS = sorted(Path(DEFAULT_IMAGE_INPUT).rglob("*.JPEG"))


def test_parquet_with_relative_paths_and_class_names(tmp_path):
    rel = [os.path.relpath(p, tmp_path) for p in PHOTOS]
    pq.write_table(pa.table({"Path": rel, "class": [p.parent.name for p in PHOTOS]}), tmp_path / "in.parquet")
    assert detect_source(str(tmp_path / "in.parquet")) == "manifest"
    source = open_source(str(tmp_path / "in.parquet"))
    items = source.list_items()
    assert [Path(it.uri).resolve() for it in items] == PHOTOS  # manifest order, relative to its folder
    classes = sorted({p.parent.name for p in PHOTOS})
    assert source.label_map() == {c: i for i, c in enumerate(classes)}
    assert [it.label for it in items] == [classes.index(p.parent.name) for p in PHOTOS]
    assert all(source.read_bytes(it) == p.read_bytes() for it, p in zip(items[:3], PHOTOS, strict=False))
    assert len(source.listing(limit=5)) == 5 and len(source.listing()) == len(PHOTOS)


def test_csv_with_urls_integer_labels_and_a_key_column(tmp_path):
    table = pa.table(
        {
            "url": [f"file://{p}" for p in PHOTOS],
            "label": list(range(len(PHOTOS))),
            "key": [f"k{i}" for i in range(len(PHOTOS))],
        }
    )
    pacsv.write_csv(table, tmp_path / "in.csv")
    source = open_source(str(tmp_path / "in.csv"))
    items = source.list_items()
    assert [it.key for it in items] == [f"k{i}" for i in range(len(PHOTOS))]
    assert [it.label for it in items] == list(range(len(PHOTOS))) and source.label_map() == {}
    assert source.read_bytes(items[0]) == PHOTOS[0].read_bytes()


def test_derived_keys_are_safe_and_colliding_ones_get_a_hash(tmp_path):
    paths = ["s3://b/a/x.jpg", "s3://b/a/x.png", "s3://b/a b/ü.jpg", "/abs/.hidden.jpg"]
    pacsv.write_csv(pa.table({"path": paths}), tmp_path / "in.csv")
    items = open_source(str(tmp_path / "in.csv"), "manifest").list_items()
    keys = [it.key for it in items]
    assert len(set(keys)) == 4 and all(k.replace("_", "").replace("-", "").isalnum() for k in keys)
    assert keys[0].startswith("b_a_x_") and keys[1].startswith("b_a_x_") and keys[0] != keys[1]
    assert keys[2] == "b_a_b" and keys[3] == "abs_hidden"
    assert [it.uri for it in items] == paths


def test_a_manifest_without_a_path_column_says_what_it_has(tmp_path):
    pacsv.write_csv(pa.table({"name": ["a.jpg"], "y": [1]}), tmp_path / "in.csv")
    with pytest.raises(ValueError, match=r"no column of input paths .*columns: name, y"):
        open_source(str(tmp_path / "in.csv"), "manifest")
    source = open_source(str(tmp_path / "in.csv"), "manifest", path_column="name", label_column="")
    assert [it.label for it in source.list_items()] == [None]
