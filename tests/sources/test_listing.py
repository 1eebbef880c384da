"""The columnar listing: same identity as the item list, rows out of parquet, shards as row ranges."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from pipeline.sources.base import SourceItem, UnsafeKeyError, listing_hash
from pipeline.sources.listing import Listing, ListingSlice


def _items(n: int) -> list[SourceItem]:
    return [
        SourceItem(
            key=f"k{i}",
            uri=f'/data/é"{i}.jpg' if i % 7 == 0 else f"s3://b/x/{i}.jpg",  # escapes json.dumps must make
            label=i % 3 if i % 5 else None,
            meta={"path": f"x/{i}", "n": i} if i % 2 else {},
            fingerprint=f"{i}:mtime=1.5" if i % 4 else None,
        )
        for i in range(n)
    ]


def test_hash_is_the_item_lists_and_rows_round_trip_through_parquet(tmp_path):
    items = _items(3000)
    listing = Listing.from_items(items)
    assert listing.hash() == listing_hash(items)
    listing.write(str(tmp_path / "a.parquet"), row_group=500)
    listing.write(str(tmp_path / "b.parquet"), row_group=333)
    stored = Listing(files=[str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")])
    both = items + items
    assert len(stored) == 6000 and stored.hash() == listing_hash(both)
    for start, stop in [(0, 1), (499, 501), (2990, 3010), (5999, 6000), (1234, 2345)]:
        assert stored.rows(start, stop) == both[start:stop]
    assert stored.take(np.array([5999, 0, 3333])) == [both[5999], both[0], both[3333]]
    assert stored.limit(10).rows(0, 10) == items[:10]
    keys, fps = listing.keys_and_fingerprints()
    assert keys == [it.key for it in items] and fps == [it.fingerprint for it in items]


def test_a_slice_is_its_items_and_pickles_as_them_not_as_the_listing(tmp_path):
    items = _items(50_000)
    listing = Listing.from_items(items)
    part = ListingSlice(listing, 100, 110)
    assert len(part) == 10 and list(part) == items[100:110] and part[3] == items[103]
    sent = pickle.dumps(part)
    assert pickle.loads(sent) == tuple(items[100:110])
    assert len(sent) < 5_000  # ten items, not fifty thousand
    picked = ListingSlice(listing, indices=np.array([7, 3]))
    assert list(picked) == [items[7], items[3]]


def test_unsafe_and_repeated_keys_are_refused():
    items = _items(10)
    with pytest.raises(UnsafeKeyError, match="repeat in the listing: k4"):
        Listing.from_items([*items, items[4]]).check_keys()
    with pytest.raises(UnsafeKeyError, match="not tar-safe"):
        Listing.from_items([*items, SourceItem(key="../etc", uri="x")]).check_keys()
    Listing.from_items(items).check_keys()
