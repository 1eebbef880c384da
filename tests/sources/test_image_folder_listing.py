"""Image folders list what torchvision's ImageFolder takes and count everything else by reason."""

from __future__ import annotations

import shutil

from pipeline.config import DEFAULT_IMAGE_INPUT
from pipeline.sources import open_source

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
