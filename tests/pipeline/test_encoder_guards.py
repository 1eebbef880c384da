"""The encoder actor's guards, in process: pixel-budget batches, out-of-memory retries in halves,
non-finite inputs and latents as error rows (never in a shard).

ShardEncoder is called directly (no Ray needed: it is a plain class that Ray instantiates). Faults
are injected by wrapping the real codec: its encode raises an out-of-memory error for batches
larger than a limit, as a GPU would; everything else is the real codec and the real actor code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from e2e_helpers import SAMPLE_IMAGES, SIZE

from pipeline.codec.model import NonFiniteError
from pipeline.preprocess.image import ImagePolicy, ImagePreprocessor, decode_image
from pipeline.runtime.batching import plan_batches
from pipeline.runtime.encode_stage import ShardEncoder
from pipeline.runtime.plan import ShardTask
from pipeline.runtime.work import DecodedSample, DecodedShard, EncodedShard
from pipeline.sources.base import SourceItem

PIXELS = 3 * SIZE * SIZE  # codec-input values of one sample


class OomAbove:
    """The real codec, whose encode runs out of memory for batches of more than `limit` samples."""

    def __init__(self, codec, limit: int, error: type[BaseException] = torch.cuda.OutOfMemoryError):
        self.codec, self.limit, self.error = codec, limit, error
        self.calls: list[int] = []

    def encode(self, x):
        self.calls.append(len(x))
        if len(x) > self.limit:
            raise self.error(f"CUDA out of memory. Tried to allocate {len(x)} samples")
        return self.codec.encode(x)

    def __getattr__(self, name):
        return getattr(self.codec, name)


def _encoder(codec_path: Path, batch_size: int = 64, batch_pixels: int | None = None) -> ShardEncoder:
    from pipeline.codec import load

    codec = load(str(codec_path))
    preprocessor = ImagePreprocessor(ImagePolicy(size=SIZE, crop="center", channels=3, multiple=8))
    budget = {"batch_pixels": batch_pixels} if batch_pixels else {}
    return ShardEncoder(codec.freeze(), preprocessor, batch_size=batch_size, **budget)


def _shard(arrays: list) -> DecodedShard:
    """One shard as the decode stage hands it to the encoder."""
    items = tuple(SourceItem(key=f"k{i}", uri=f"mem://{i}") for i in range(len(arrays)))
    samples = [
        DecodedSample(key=it.key, label=None, slot=i, array=a, meta={"key": it.key, "source": it.uri})
        for i, (it, a) in enumerate(zip(items, arrays, strict=True))
    ]
    return DecodedShard(task=ShardTask(shard=0, slot_offset=0, items=items), samples=samples)


def _photos(n: int) -> list[np.ndarray]:
    files = sorted(SAMPLE_IMAGES.glob("*/*.JPEG"))[:n]
    policy = ImagePolicy(size=SIZE, crop="center", channels=3, multiple=8)
    return [decode_image(f.read_bytes(), policy).array for f in files]


def _run(encoder: ShardEncoder, arrays: list) -> EncodedShard:
    return encoder(_shard(arrays))


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return _photos(8)


@pytest.fixture(scope="module")
def alone(klt_codec, photos) -> list[np.ndarray]:
    """Each photo's latent, encoded on its own by the plain encoder."""
    enc = _encoder(klt_codec)
    return [_run(enc, [p]).samples[0].latent for p in photos]


def test_out_of_memory_batches_are_retried_in_halves(klt_codec, photos, alone):
    enc = _encoder(klt_codec)
    enc.codec = OomAbove(enc.codec, limit=2)
    out = _run(enc, photos)
    assert out.errors == []
    assert [e.key for e in out.samples] == [f"k{i}" for i in range(8)]
    for e, z in zip(out.samples, alone, strict=True):
        np.testing.assert_array_equal(e.latent, z)
    assert enc.codec.calls == [8, 4, 2, 2, 4, 2, 2]  # halves, then halves of the halves
    # the per-shard histograms count exactly the latents written
    assert out.statistics["samples"] == 8
    assert np.asarray(out.statistics["histogram"]).sum() == sum(z.size for z in alone)


@pytest.mark.parametrize("error", [MemoryError, RuntimeError])
def test_other_out_of_memory_errors_also_split(klt_codec, photos, error):
    enc = _encoder(klt_codec)
    enc.codec = OomAbove(enc.codec, limit=3, error=error)
    out = _run(enc, photos[:6])
    assert (len(out.samples), out.errors) == (6, [])
    assert enc.codec.calls == [6, 3, 3]


def test_a_sample_too_large_alone_is_an_error_row_and_the_run_goes_on(klt_codec, photos):
    enc = _encoder(klt_codec)
    enc.codec = OomAbove(enc.codec, limit=0)
    out = _run(enc, photos[:3])
    assert out.samples == []
    assert [(e.key, e.stage) for e in out.errors] == [
        ("k0", "encode"),
        ("k1", "encode"),
        ("k2", "encode"),
    ]
    assert all("out of memory" in e.reason for e in out.errors)


def test_batches_follow_the_pixel_budget(klt_codec, photos, alone):
    enc = _encoder(klt_codec, batch_size=64, batch_pixels=3 * PIXELS)
    enc.codec = OomAbove(enc.codec, limit=64)
    out = _run(enc, photos)
    assert enc.codec.calls == [3, 3, 2]
    for e, z in zip(out.samples, alone, strict=True):
        np.testing.assert_array_equal(e.latent, z)
    # --batch-size stays an upper bound; one sample over the budget still goes, alone
    assert [len(b) for b in plan_batches(list(range(8)), lambda _: (3, SIZE, SIZE), 2, 10 * PIXELS)] == [
        2
    ] * 4
    assert [len(b) for b in plan_batches(list(range(3)), lambda _: (3, SIZE, SIZE), 64, PIXELS // 2)] == [
        1
    ] * 3


def test_non_finite_inputs_never_reach_a_shard(klt_codec, photos, alone):
    """A float input (a raster's, a waveform's) holding NaN/Inf is an error row; the others encode."""
    bad_nan = photos[1].astype(np.float32)
    bad_nan[0, 3, 4] = np.nan
    bad_inf = photos[2].astype(np.float32)
    bad_inf[2, 0, 0] = np.inf
    out = _run(_encoder(klt_codec), [photos[0], bad_nan, bad_inf, photos[3]])
    assert [e.key for e in out.samples] == ["k0", "k3"]
    np.testing.assert_array_equal(out.samples[1].latent, alone[3])
    reasons = {e.key: e for e in out.errors}
    assert sorted(reasons) == ["k1", "k2"]
    assert all(e.stage == "encode" and "non-finite" in e.reason for e in reasons.values())
    assert "1 NaN" in reasons["k1"].reason and "1 Inf" in reasons["k2"].reason


def test_a_non_finite_latent_is_refused_before_the_int8_cast(klt_codec, photos):
    """A codec whose float latent goes NaN (here: a NaN weight) must not emit arbitrary int8 values."""
    enc = _encoder(klt_codec)
    with torch.no_grad():
        enc.codec.encoder.bias[5] = float("nan")
    with pytest.raises(NonFiniteError, match="latent before quantization"):
        enc.codec.encode(torch.zeros(2, 3, SIZE, SIZE))
    out = _run(enc, photos[:3])
    assert out.samples == []
    assert [e.key for e in out.errors] == ["k0", "k1", "k2"]
    assert all("non-finite" in e.reason and "NaN" in e.reason for e in out.errors)
