"""image-folder keys (fast, no Ray): unique, tar-safe, and stable for names that do not collide."""

from __future__ import annotations

from pipeline.sources import open_source
from pipeline.sources.base import check_keys


def test_files_that_differ_only_in_their_extension_get_distinct_keys(tmp_path):
    for name in ("cat/x.jpg", "cat/x.png", "cat/x.JPEG", "cat/y.jpg", "dog/x.jpg"):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"")
    items = open_source(str(tmp_path), "image-folder").list_items()
    keys = {it.meta["path"]: it.key for it in items}
    check_keys(items)  # unique and tar-safe, as the runtime requires
    assert len(set(keys.values())) == 5
    # no collision: the key is the path without its extension, as before
    assert keys["cat/y.jpg"] == "cat_y" and keys["dog/x.jpg"] == "dog_x"
    # a collision: the shared stem, plus a hash of each full path
    for name in ("cat/x.jpg", "cat/x.png", "cat/x.JPEG"):
        assert keys[name].startswith("cat_x_") and len(keys[name]) == len("cat_x_") + 8
