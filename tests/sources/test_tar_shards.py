"""wds-tars: listing, labels, seeking reads, shard patterns, and hostile members as error rows."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from source_builders import add_member, image_bytes, wds_shards, write_tar

from pipeline.preprocess.image import ImagePolicy, ImagePreprocessor
from pipeline.sources import SourceItem, detect_source, open_source
from pipeline.sources.tar_shards import TarShardSource, UnsafeTarMemberError, wds_split


def test_listing_order_keys_labels_and_bytes(tmp_path):
    path, _ = wds_shards(tmp_path)
    source = TarShardSource(path)
    items = source.list_items()
    assert [i.key for i in items] == ["n01_0001", "n01_0002", "sub_n02_0001", "n02_0002"]
    assert [i.label for i in items] == [3, 7, 5, None]  # .cls, .cls, .json "label", none
    assert items[2].uri.endswith("train-000001.tar::sub/n02_0001.webp")
    assert items[0].meta["member"] == "n01_0001.jpg" and items[0].meta["shard"] == "train-000000.tar"
    with tarfile.open(Path(path) / "train-000000.tar") as tar:
        expected = tar.extractfile("n01_0002.png").read()
    assert source.read_bytes(items[1]) == expected
    decoded = ImagePreprocessor(ImagePolicy(size=8)).decode(source.read_bytes(items[2]))
    assert decoded.array.shape == (3, 8, 8)


def test_reads_do_not_extract(tmp_path):
    path, _ = wds_shards(tmp_path)
    before = sorted(p for p in tmp_path.rglob("*"))
    source = TarShardSource(path)
    for item in source.list_items():
        source.read_bytes(item)
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_single_tar_and_brace_pattern(tmp_path):
    path, _ = wds_shards(tmp_path)
    one = TarShardSource(f"{path}/train-000001.tar").list_items()
    assert [i.key for i in one] == ["sub_n02_0001", "n02_0002"]
    both = TarShardSource(f"{path}/train-{{000000..000001}}.tar").list_items()
    assert [i.key for i in both] == [i.key for i in TarShardSource(path).list_items()]
    with pytest.raises(FileNotFoundError, match="1 of 3 shards missing"):
        TarShardSource(f"{path}/train-{{000000..000002}}.tar")


def test_detect(tmp_path):
    path, _ = wds_shards(tmp_path)
    assert detect_source(path) == "wds-tars"
    assert detect_source(f"{path}/train-000000.tar") == "wds-tars"
    assert detect_source(f"{path}/train-{{000000..000001}}.tar") == "wds-tars"
    assert not TarShardSource.detect(str(tmp_path / "nothing"))


def test_hostile_members_are_listed_and_refused(tmp_path):
    shard = tmp_path / "evil.tar"
    good = image_bytes(9)
    with tarfile.open(shard, "w") as tar:
        add_member(tar, "good.png", good)
        add_member(tar, "../escape.png", good)
        add_member(tar, "/etc/absolute.png", good)
        add_member(tar, "C:\\Windows\\evil.png", good)
        add_member(tar, "a/../../up.jpg", good)
        add_member(tar, "link.jpg", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        add_member(tar, "hard.jpg", type=tarfile.LNKTYPE, linkname="good.png")
        add_member(tar, "dev.jpg", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
        add_member(tar, "fifo.jpg", type=tarfile.FIFOTYPE)
        add_member(tar, "notes.txt", b"ignored")
    source = TarShardSource(str(shard))
    items = source.list_items()
    assert len(items) == 9 and len({i.key for i in items}) == 9
    assert source.read_bytes(items[0]) == good
    reasons = {}
    for item in items[1:]:
        with pytest.raises(UnsafeTarMemberError, match="unsafe tar member") as err:
            source.read_bytes(item)
        reasons[item.meta["member"]] = str(err.value)
    assert "escapes" in reasons["../escape.png"] and "escapes" in reasons["a/../../up.jpg"]
    assert "absolute" in reasons["/etc/absolute.png"] and "absolute" in reasons["C:\\Windows\\evil.png"]
    assert "symlink" in reasons["link.jpg"] and "hardlink" in reasons["hard.jpg"]
    assert "device" in reasons["dev.jpg"] and "fifo" in reasons["fifo.jpg"]
    assert not (tmp_path.parent / "escape.png").exists()


def test_truncated_member_is_a_read_error(tmp_path):
    shard = write_tar(
        tmp_path / "cut.tar", [("a.png", image_bytes(1)), ("b.png", image_bytes(2, size=(64, 64)))]
    )
    data = shard.read_bytes()
    cut = tmp_path / "cut2.tar"
    cut.write_bytes(data[: 512 * 4 + 100])  # b.png's header, then part of its data
    source = TarShardSource(str(cut))
    items = source.list_items()
    assert source.read_bytes(items[0]) == image_bytes(1)
    with pytest.raises(OSError, match="truncated"):
        source.read_bytes(items[1])


def test_same_key_in_two_shards_gets_distinct_keys(tmp_path):
    write_tar(tmp_path / "s" / "a.tar", [("x.png", image_bytes(1))])
    write_tar(tmp_path / "s" / "b.tar", [("x.png", image_bytes(2))])
    keys = [i.key for i in TarShardSource(str(tmp_path / "s")).list_items()]
    assert len(set(keys)) == 2 and all(k.startswith("x_") for k in keys)


def test_item_without_offsets_is_located(tmp_path):
    path, _ = wds_shards(tmp_path)
    source = open_source(path)
    listed = source.list_items()[1]
    bare = SourceItem(key=listed.key, uri=listed.uri)
    assert source.read_bytes(bare) == source.read_bytes(listed)


def test_member_names_with_separators_of_their_own(tmp_path):
    shard = write_tar(tmp_path / "odd.tar", [("a::b.png", image_bytes(5))])
    source = TarShardSource(str(shard))
    (item,) = source.list_items()
    assert item.key == "a_b" and source.read_bytes(item) == image_bytes(5)


def test_wds_split():
    assert wds_split("dir/n01.abc.jpg") == ("dir/n01", "abc.jpg")
    assert wds_split("n01.CLS") == ("n01", "cls")
    assert wds_split("README") == ("README", "")
