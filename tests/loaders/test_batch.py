"""One batch structure (issue 16): every loader, modality and option yields a Batch that unpacks as
(latents, labels), so the README's `for z, y in loader:` works unchanged on image and audio runs;
mask, meta and key are reached by name. Runs are built by hand (synth.py), no Ray."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from synth import Sample, make_samples, write_run

from pipeline.loaders import Batch, LatentWebDataset, LatentZarrDataset, LatentZarrStream

STREAMS = {"webdataset": LatentWebDataset, "zarr": LatentZarrStream}
README = Path(__file__).resolve().parents[2] / "README.md"
N = 10


def _image_samples() -> list[Sample]:
    """Latents shaped like the README's model input: 12 channels (rgb-16x-klt), 8x8 positions."""
    rng = np.random.default_rng(0)
    return [
        Sample(key=f"s{i:04d}", latent=rng.integers(-128, 128, (12, 8, 8)).astype(np.int8), label=i % 5)
        for i in range(N)
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[tuple[str, str], str]:
    """(format, modality) -> a committed run, with statistics and flip pairs for the options."""
    tmp = tmp_path_factory.mktemp("batch")
    out = {}
    for fmt in STREAMS:
        image = _image_samples()
        for s in image:
            s.latent_flip = np.flip(s.latent, -1).copy()
        out[fmt, "image"] = str(write_run(tmp / f"{fmt}-image", image, fmt=fmt, with_statistics=True))
        audio = make_samples(N, audio_steps=16, flip=True)
        out[fmt, "audio"] = str(
            write_run(tmp / f"{fmt}-audio", audio, fmt=fmt, kind="1d", with_statistics=True)
        )
    return out


def _readme_loop() -> str:
    section = README.read_text()
    section = section[section.index("## Reading latents in a training loop") :]
    return section[section.index("```python") + len("```python") : section.index("```\n", 10)]


@pytest.mark.parametrize("fmt", sorted(STREAMS))
@pytest.mark.parametrize("modality", ["image", "audio"])
def test_the_readme_loop_runs_unchanged_on_image_and_audio_runs(runs, fmt, modality):
    code = _readme_loop()
    assert "for z, y in loader:" in code and "LatentWebDataset(" in code
    code = code.replace("out/samples-wds", runs[fmt, modality]).replace("range(10)", "range(1)")
    code = code.replace("num_workers=4", "num_workers=0").replace(
        "LatentWebDataset(", f"{STREAMS[fmt].__name__}("
    )
    code = code.replace("from pipeline.loaders import LatentWebDataset", "from pipeline.loaders import *")
    if modality == "audio":  # the loop stays as written; only the example's model takes (B, C, T)
        code = re.sub(r"Conv2d\(12,", "Conv1d(2,", code).replace("AdaptiveAvgPool2d", "AdaptiveAvgPool1d")
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the project's own README
    assert torch.isfinite(scope["loss"]) and scope["loss"].requires_grad
    assert scope["z"].dim() == (4 if modality == "image" else 3) and scope["y"].dtype == torch.int64


OPTIONS = [
    {},
    {"batch_size": 4},
    {"batch_size": 4, "with_meta": True},
    {"with_meta": True},
    {"batch_size": 3, "flip": "pair", "normalize": True, "output": "float"},
    {"batch_size": 4, "output": "int", "drop_last": True},
    {"resampled": True, "batch_size": 2},
]


@pytest.mark.parametrize("fmt", sorted(STREAMS))
@pytest.mark.parametrize("modality", ["image", "audio"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "plain")
def test_every_stream_option_yields_a_batch_with_named_fields(runs, fmt, modality, options):
    ds = STREAMS[fmt](runs[fmt, modality], **options)
    items = list(ds) if not options.get("resampled") else [b for b, _ in zip(ds, range(5), strict=False)]
    assert items
    batched, audio = bool(options.get("batch_size")), modality == "audio"
    for item in items:
        assert isinstance(item, Batch)
        z, y = item
        assert z is item.latents and y is item.labels
        assert z.dim() == (2 if audio else 3) + batched
        assert isinstance(y, torch.Tensor if batched else int)
        if batched:
            assert y.shape == (z.shape[0],) and len(item.key) == z.shape[0]
        else:
            assert isinstance(item.key, str)
        assert (item.mask is not None) == audio
        if audio:
            assert item.mask.dtype == torch.bool and item.mask.shape == (*z.shape[:-2], z.shape[-1])
        assert (item.meta is not None) == bool(options.get("with_meta"))
        if item.meta is not None:
            metas = item.meta if batched else [item.meta]
            keys = item.key if batched else [item.key]
            assert [m["key"] for m in metas] == keys


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_batches_pass_through_dataloaders_whole(runs, modality):
    root = runs["webdataset", modality]
    via_loader = list(LatentWebDataset(root, batch_size=4, with_meta=True, seed=1).loader(num_workers=2))
    direct = list(LatentWebDataset(root, batch_size=4, with_meta=True, seed=1))
    assert sorted(k for b in via_loader for k in b.key) == sorted(k for b in direct for k in b.key)
    assert all(isinstance(b, Batch) and b.meta is not None for b in via_loader)
    assert all((b.mask is not None) == (modality == "audio") for b in via_loader)
    plain = torch.utils.data.DataLoader(
        LatentWebDataset(root, batch_size=4), batch_size=None, pin_memory=False
    )
    for z, y in plain:
        assert z.shape[0] == y.shape[0]


def test_the_map_style_dataset_gives_audio_masks_like_the_streams(runs):
    ds = LatentZarrDataset(runs["zarr", "audio"], output="int")
    stream = {b.key: b for b in LatentZarrStream(runs["zarr", "audio"], output="int")}
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch.mask.shape == (4, 16) and batch.meta is None
    for key, mask, z in zip(batch.key, batch.mask, batch.latents, strict=True):
        assert torch.equal(mask, stream[key].mask) and torch.equal(z, stream[key].latents)
    assert LatentZarrDataset(runs["zarr", "image"])[0].mask is None


def test_the_map_style_dataset_collates_into_a_batch(runs):
    ds = LatentZarrDataset(runs["zarr", "image"], output="int", with_meta=True)
    z, y = sample = ds[3]
    assert isinstance(sample, Batch) and z.shape == (12, 8, 8) and isinstance(y, int)
    assert sample.meta["key"] == sample.key
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=False)
    batches = list(loader)
    assert [len(b.key) for b in batches] == [4, 4, 2]
    z, y = batches[0]
    assert z.shape == (4, 12, 8, 8) and z.dtype == torch.int8 and y.tolist() == [0, 1, 2, 3]
    assert [m["key"] for m in batches[0].meta] == batches[0].key == ds.keys()[:4]
