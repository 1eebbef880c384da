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


def _partitioned(tmp_path: Path) -> Path:
    """Three manifest files (one per class folder, one of them CSV): the listing's partitions."""
    folder = tmp_path / "manifests"
    folder.mkdir()
    classes = sorted({p.parent.name for p in PHOTOS})
    for i, c in enumerate(classes[:3]):
        files = [p for p in PHOTOS if p.parent.name == c]
        table = pa.table({"path": [str(p) for p in files], "label": [c] * len(files)})
        if i == 1:
            pacsv.write_csv(table, folder / f"{i:02d}-{c}.csv")
        else:
            pq.write_table(table, folder / f"{i:02d}-{c}.parquet")
    # the same path but its extension in another partition: derived keys collide across files, both
    # get a short hash of their path
    again = str(PHOTOS[0].with_suffix(".jpeg"))
    pq.write_table(pa.table({"path": [again], "label": [classes[0]]}), folder / "03-again.parquet")
    return folder


def test_a_folder_of_manifests_is_one_listing_in_file_order(tmp_path):
    folder = _partitioned(tmp_path)
    assert detect_source(str(folder)) == "manifest"
    source = open_source(str(folder))
    items = source.list_items()
    classes = sorted({p.parent.name for p in PHOTOS})[:3]
    expected = [p for c in classes for p in PHOTOS if p.parent.name == c] + [PHOTOS[0].with_suffix(".jpeg")]
    assert [Path(it.uri) for it in items] == expected
    assert source.label_map() == {c: i for i, c in enumerate(classes)}
    keys = [it.key for it in items]
    assert len(set(keys)) == len(keys) and keys[0][:-9] == keys[-1][:-9] and keys[0] != keys[-1]
    assert len(open_source(str(folder)).listing(limit=7)) == 7


def test_partitions_list_the_same_as_ray_tasks_threads_or_in_order(ray_session, tmp_path):
    import threading

    import ray

    from pipeline.runtime.ray_exec import partition_map

    folder = _partitioned(tmp_path)
    serial = open_source(str(folder)).list_items()
    up, down = threading.Event(), threading.Event()
    up.set()

    @ray.remote(num_cpus=1)
    class Holder:  # as the shard workers do while the driver still lists: every CPU of the Ray taken
        def ready(self) -> bool:
            return True

    holders = [Holder.remote() for _ in range(int(ray.cluster_resources()["CPU"]))]
    ray.get([h.ready.remote() for h in holders])
    result: list = []
    lister = threading.Thread(
        target=lambda: result.append(open_source(str(folder)).listing(map_fn=partition_map(up)))
    )
    lister.start()
    lister.join(timeout=60)
    for h in holders:
        ray.kill(h)
    assert result, "listing tasks waited for CPUs the shard workers hold"
    on_ray = result[0]
    on_threads = open_source(str(folder)).listing(map_fn=partition_map(down))
    assert on_ray.rows(0, len(on_ray)) == serial == on_threads.rows(0, len(on_threads))
