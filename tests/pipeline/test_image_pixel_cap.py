"""The decompression-bomb cap of the image policy (fast, no Ray): the policy's max_pixels decides."""

from __future__ import annotations

import pytest
from e2e_helpers import png_bomb

from pipeline.preprocess.image import DEFAULT_MAX_PIXELS, DecodeError, ImagePolicy, decode_image


def _reason(data: bytes, policy: ImagePolicy) -> str:
    with pytest.raises(DecodeError) as err:
        decode_image(data, policy)
    return str(err.value)


def test_images_under_the_cap_are_decoded_not_refused_as_bombs():
    # 108 Mpixels: under the default cap (179 M), over Pillow's warning threshold (89 M). The header
    # has no pixel data, so decoding fails, but as a truncated file, not as a bomb
    reason = _reason(png_bomb(12_000, 9_000), ImagePolicy(size=64))
    assert reason.startswith("corrupt or truncated PNG"), reason


def test_images_over_the_cap_are_refused_before_decoding():
    reason = _reason(png_bomb(12_000, 9_000), ImagePolicy(size=64, max_pixels=50_000_000))
    assert reason == "image is 12000x9000 = 108000000 pixels, over the cap of 50000000"
    reason = _reason(png_bomb(100_000, 100_000), ImagePolicy(size=64))
    assert "decompression bomb" in reason or f"over the cap of {DEFAULT_MAX_PIXELS}" in reason
