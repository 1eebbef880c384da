"""The contract every registered source keeps (one case per kind in source_builders.SOURCE_CASES):
deterministic listing, tar-safe unique keys, readable items, JSON-able metadata, cheap pickling."""

from __future__ import annotations

import json
import pickle
import re

import pytest

from pipeline.registry import SOURCES
from pipeline.sources import detect_source, listing_hash, open_source

KEY = re.compile(r"^[A-Za-z0-9_-]+$")
PICKLE_LIMIT = 64 * 1024  # sources travel to every Ray worker: no listings inside


@pytest.fixture(params=sorted(SOURCES))
def case(request, build, tmp_path):
    path, options = build(request.param, tmp_path)
    return request.param, path, options


def test_detected_from_the_input(case):
    name, path, _ = case
    assert detect_source(path) == name


def test_listing_is_deterministic(case):
    name, path, options = case
    first = open_source(path, name, **options).list_items()
    again = open_source(path, name, **options).list_items()
    assert first, "a case must list something"
    assert [i.to_dict() for i in first] == [i.to_dict() for i in again]
    assert listing_hash(first) == listing_hash(again)


def test_keys_are_tar_safe_and_unique(case):
    name, path, options = case
    items = open_source(path, name, **options).list_items()
    keys = [i.key for i in items]
    assert all(KEY.match(k) for k in keys), [k for k in keys if not KEY.match(k)]
    assert len(set(keys)) == len(keys)
    assert all(i.label is None or isinstance(i.label, int) for i in items)


def test_every_item_reads(case):
    name, path, options = case
    source = open_source(path, name, **options)
    for item in source.list_items():
        data = source.read_bytes(item)
        assert isinstance(data, bytes) and data, item.key


def test_metadata_is_json(case):
    name, path, options = case
    source = open_source(path, name, **options)
    for item in source.list_items():
        json.dumps(item.to_dict())
    json.dumps(source.describe())
    labels = source.label_map()
    assert all(isinstance(k, str) and isinstance(v, int) for k, v in labels.items())


def test_pickle_round_trip(case):
    name, path, options = case
    source = open_source(path, name, **options)
    items = source.list_items()
    blob = pickle.dumps(source)
    assert len(blob) < PICKLE_LIMIT, f"{name} pickles to {len(blob)} bytes"
    clone = pickle.loads(blob)
    assert clone.modality == source.modality
    for item in (items[0], items[-1]):  # what a worker does: read items listed on the driver
        assert clone.read_bytes(item) == source.read_bytes(item)
