"""Image folders list what torchvision's ImageFolder takes and count everything else by reason."""

from __future__ import annotations

import shutil

from pipeline.config import DEFAULT_IMAGE_INPUT
from pipeline.sources import open_source
from pipeline.sources.base import listing_hash

PHOTO = next(iter(sorted(__import__("pathlib").Path(DEFAULT_IMAGE_INPUT).rglob("*.JPEG"))))


def test_imagefolder_extensions_links_and_reasons(tmp_path):
    root = tmp_path / "in"
    for name in ("a/x.jpg", "a/y.PGM", "a/.hidden.png", "b/z.tiff", "b/w.webp"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PHOTO, root / name)
    (root / "a" / "notes.txt").write_text("x")
    (root / "a" / "README").write_text("x")
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(PHOTO, tmp_path / "elsewhere" / "v.jpg")
    (root / "linked").symlink_to(tmp_path / "elsewhere")  # followed, as ImageFolder does
    (root / "b" / "up").symlink_to(root)  # a loop: not followed, counted
    (root / "b" / "dangling.jpg").symlink_to(tmp_path / "missing.jpg")
    source = open_source(str(root))
    keys = sorted(it.key for it in source.list_items())
    assert keys == ["a_hidden", "a_x", "a_y", "b_w", "b_z", "linked_v"]
    assert source.describe()["skipped"] == {
        "broken link": 1,
        "extension .txt": 1,
        "link loop": 1,
        "no extension": 1,
    }
    assert source.label_map() == {"a": 0, "b": 1, "linked": 2}


def test_extensions_override_counts_the_rest(tmp_path):
    for name in ("a/x.jpg", "a/y.jpeg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PHOTO, tmp_path / name)
    source = open_source(str(tmp_path), extensions=["JPG"])
    assert [it.key for it in source.list_items()] == ["a_x"]
    assert source.describe()["skipped"] == {"extension .jpeg": 1}


def _tree(root, names):
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PHOTO, root / name)
    return root


def _walked(root, extensions=(".jpg", ".png", ".jpeg")):
    """What the listing must be, worked out independently: every file of the tree, sorted by path,
    keys by base.unique_keys over the whole listing, classes = parent folders in sorted order."""
    from pathlib import Path

    from pipeline.sources.base import unique_keys

    files = sorted(str(p) for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() in extensions)
    rel = [f[len(str(root)) + 1 :] for f in files]
    keys = unique_keys([str(Path(r).with_suffix("")) for r in rel], ids=rel)
    nested = all("/" in r for r in rel)
    classes = sorted({r.rsplit("/", 2)[-2] for r in rel}) if nested else []
    labels = [classes.index(r.rsplit("/", 2)[-2]) if nested else None for r in rel]
    return list(zip(keys, ["file://" + f for f in files], labels, rel, strict=True))


# folder names whose paths sort differently from the names ("n01-/" < "n01/"), keys that collide
# across folders ("a_b/x" and "a/b_x" are both a_b_x) and within one (x.jpg, x.png)
TRICKY = [
    "n01/x.jpg",
    "n01-/x.jpg",
    "n01x/y.png",
    "a_b/x.jpg",
    "a/b_x.jpg",
    "c/x.jpg",
    "c/x.png",
    "c/d/e.jpeg",
]


def test_partitioned_listing_is_the_sorted_walk(tmp_path):
    for case, names in (("nested", TRICKY), ("mixed", [*TRICKY, "m.jpg", "n01.png", "zz.jpg"])):
        root = _tree(tmp_path / case, names)
        source = open_source(str(root))
        parts = source.partitions()
        assert len(parts) > 1
        got = [(it.key, it.uri, it.label, it.meta["path"]) for it in source.list_items()]
        assert got == _walked(root), case
        assert source.listing().hash() == listing_hash(source.list_items())


def test_opening_an_image_folder_does_not_list_it(tmp_path):
    root = _tree(tmp_path / "in", ["a/x.jpg", "b/y.jpg"])
    (root / "c").mkdir()
    (root / "c" / "notes.txt").write_text("x")
    source = open_source(str(root))
    assert source.skipped == {}  # nothing walked yet beyond the first image
    source.listing()
    assert source.skipped == {"extension .txt": 1}
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    (empty / "a" / "notes.txt").write_text("x")
    import pytest

    from pipeline.sources.base import NoInputsError

    with pytest.raises(NoInputsError, match="no images"):
        open_source(str(empty), "image-folder")


def test_image_folder_partitions_on_ray_tasks_equal_threads(ray_session, tmp_path):
    import threading

    from pipeline.runtime.ray_exec import partition_map

    root = _tree(tmp_path / "in", TRICKY + [f"k{i:02d}/p.jpg" for i in range(9)])
    up, down = threading.Event(), threading.Event()
    up.set()
    on_ray = open_source(str(root)).listing(map_fn=partition_map(up, max_tasks=4))
    on_threads = open_source(str(root)).listing(map_fn=partition_map(down))
    serial = open_source(str(root)).list_items()
    assert on_ray.rows(0, len(on_ray)) == serial == on_threads.rows(0, len(on_threads))
    assert on_ray.hash() == on_threads.hash()
