"""raster source: listing with class folders, single files, and detection vs plain-picture TIFFs."""

from __future__ import annotations

import numpy as np
import tifffile
from PIL import Image
from source_builders import raster_tree

from pipeline.sources import detect_source
from pipeline.sources.raster import RasterSource


def test_listing_labels_and_bytes(tmp_path):
    path, _ = raster_tree(tmp_path)
    source = RasterSource(path)
    items = source.list_items()
    assert [i.key for i in items] == ["forest_tile_0", "forest_tile_1", "river_pages", "river_tile_0"]
    assert [i.label for i in items] == [0, 0, 1, 1]
    assert source.label_map() == {"forest": 0, "river": 1}
    assert items[2].meta == {"path": "river/pages.tiff", "class": "river"}
    assert source.read_bytes(items[0]) == (tmp_path / "rasters" / "forest" / "tile_0.tif").read_bytes()
    assert source.modality == "raster"


def test_single_file(tmp_path):
    path, _ = raster_tree(tmp_path)
    one = RasterSource(f"{path}/river/tile_0.tif")
    items = one.list_items()
    assert [i.key for i in items] == ["tile_0"] and items[0].label is None
    assert one.read_bytes(items[0])


def test_detect_rasters_but_not_plain_pictures(tmp_path):
    path, _ = raster_tree(tmp_path)
    assert detect_source(path) == "raster"
    assert detect_source(f"{path}/forest/tile_0.tif") == "raster"
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    Image.new("RGB", (8, 8), "red").save(rgb / "a.tif")
    tifffile.imwrite(rgb / "b.tif", np.zeros((8, 8), np.uint8))
    assert not RasterSource.detect(str(rgb))
    assert detect_source(str(rgb)) == "image-folder"
    grey16 = tmp_path / "dem"
    grey16.mkdir()
    tifffile.imwrite(grey16 / "dem.tif", np.zeros((8, 8), np.int16))
    assert RasterSource.detect(str(grey16))  # not 8-bit: a raster
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    tifffile.imwrite(mixed / "x.tif", np.zeros((3, 8, 8), np.uint16), photometric="minisblack")
    Image.new("RGB", (8, 8)).save(mixed / "y.png")
    assert not RasterSource.detect(str(mixed))  # a folder of mixed pictures is an image folder
