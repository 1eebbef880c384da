"""Aspect buckets: parsing, the nearest-bucket rule, and the resize/crop plan each image gets."""

from __future__ import annotations

import argparse
import io
import math

import numpy as np
import pytest
from PIL import Image

from pipeline.preprocess.image import (
    ImagePolicy,
    ImagePreprocessor,
    bucket_name,
    choose_bucket,
    decode_image,
    parse_buckets,
)

BUCKETS = ((256, 256), (320, 192), (192, 320))


def _png(w: int, h: int) -> bytes:
    rng = np.random.default_rng(w * 1000 + h)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_parse_list_sorted_unique():
    assert parse_buckets("320x192, 256x256,192x320,256x256", 8) == ((192, 320), (256, 256), (320, 192))


def test_parse_refuses_sides_off_the_block_grid():
    with pytest.raises(ValueError, match="multiple of 2"):
        parse_buckets("256x250", 8)
    with pytest.raises(ValueError, match="WxH"):
        parse_buckets("256", 8)


@pytest.mark.parametrize("multiple", [8, 16, 32])
def test_area_form_gives_block_multiples_near_the_area_and_ratio(multiple):
    ratios = ["1:1", "4:3", "3:4", "16:9", "9:16"]
    buckets = parse_buckets(f"area=65536:ratios={','.join(ratios)}", multiple)
    assert len(buckets) == len(ratios)
    for w, h in buckets:
        assert w % multiple == 0 and h % multiple == 0
        assert abs(w * h / 65536 - 1) < 0.2
    for ratio in ratios:
        a, b = (int(v) for v in ratio.split(":"))
        nearest = min(buckets, key=lambda wh: abs(math.log(wh[0] / wh[1]) - math.log(a / b)))
        assert abs(math.log(nearest[0] / nearest[1]) - math.log(a / b)) < 0.1


def test_nearest_bucket_by_log_aspect_ratio():
    assert choose_bucket(1000, 1000, BUCKETS) == (256, 256)
    assert choose_bucket(1600, 900, BUCKETS) == (320, 192)  # 16:9 is nearest 5:3
    assert choose_bucket(900, 1600, BUCKETS) == (192, 320)
    # log distance: 1.25:1 is nearer 1:1 (0.223) than 5:3 (0.288), though nearer 5:3 in linear ratio
    assert choose_bucket(1250, 1000, BUCKETS) == (256, 256)


def test_ties_are_deterministic():
    # square image, buckets 4:3 and 3:4: equally far; then the nearer area, then the smaller W
    assert choose_bucket(100, 100, ((256, 192), (192, 256))) == (192, 256)
    assert choose_bucket(100, 100, ((192, 256), (256, 192))) == (192, 256)
    # one ratio in two sizes: the one nearest the image's area
    assert choose_bucket(300, 300, ((256, 256), (512, 512))) == (256, 256)
    assert choose_bucket(500, 500, ((256, 256), (512, 512))) == (512, 512)


@pytest.mark.parametrize("size", [(640, 360), (360, 640), (500, 500), (333, 517), (100, 61), (31, 300)])
def test_decode_covers_the_bucket_and_center_crops(size):
    w, h = size
    policy = ImagePolicy(channels=3, multiple=8, buckets=BUCKETS)
    decoded = decode_image(_png(w, h), policy)
    bw, bh = choose_bucket(w, h, BUCKETS)
    assert decoded.array.shape == (3, bh, bw)
    meta = decoded.meta
    assert meta["bucket"] == bucket_name((bw, bh)) == f"{bw}x{bh}"
    assert meta["original_size"] == [w, h]
    rw, rh = meta["resized_size"]
    left, top, right, bottom = meta["crop_box"]
    assert (right - left, bottom - top) == (bw, bh)
    assert rw >= bw and rh >= bh and min(rw - bw, rh - bh) <= 1  # covers; one side fits (rounding)
    assert left == (rw - bw) // 2 and top == (rh - bh) // 2  # centered
    assert abs(rw / rh - w / h) < 0.02 * (w / h) + 2 / min(rh, rw)  # aspect kept by the resize


def test_policy_description_and_shapes():
    plain = ImagePreprocessor(ImagePolicy(channels=3, multiple=8))
    bucketed = ImagePreprocessor(ImagePolicy(channels=3, multiple=8, buckets=BUCKETS))
    assert "buckets" not in plain.to_dict()  # unbucketed runs keep their settings hash
    assert bucketed.to_dict()["buckets"] == ["256x256", "320x192", "192x320"]
    assert plain.fixed_shape() == (3, 256, 256) and plain.bucket_shapes() is None
    assert bucketed.fixed_shape() is None
    shapes = {"256x256": (3, 256, 256), "320x192": (3, 192, 320), "192x320": (3, 320, 192)}
    assert bucketed.bucket_shapes() == shapes  # (C, H, W) of a W x H bucket
    with pytest.raises(ValueError, match="multiples"):
        ImagePolicy(multiple=16, buckets=((256, 200),))


def test_job_flags_reach_the_config():
    from pipeline.cli import (
        add_bucket_flags,
        add_common_flags,
        add_geometry_flags,
        config_from_args,
        image_settings,
    )

    parser = argparse.ArgumentParser()
    add_common_flags(parser, default_input="in", default_output="out", default_codec="rgb-16x-klt")
    add_geometry_flags(parser.add_argument_group("images"))
    add_bucket_flags(parser.add_argument_group("images"))
    args = parser.parse_args(["--buckets", "256x256,320x192", "--flip-pair"])
    cfg = config_from_args(args, image=image_settings(args))
    assert cfg.image.buckets == "256x256,320x192" and cfg.sink.flip_pair
    args = parser.parse_args([])
    cfg = config_from_args(args, image=image_settings(args))
    assert cfg.image.buckets is None and not cfg.sink.flip_pair
    help_text = parser.format_help()
    assert "--buckets" in help_text and "--flip-pair" in help_text
