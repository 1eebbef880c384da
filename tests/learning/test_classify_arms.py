"""Classification's three arms: which arms and codec a run picks, the grid every stem lands on, the
augmentation every arm shares (and that it is exact on latents), the seed summary and the verdicts."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from pipeline import codec as wc
from pipeline.config import DEFAULT_IMAGE_INPUT
from pipeline.learning.arms import ARMS, comparison, select_arms
from pipeline.learning.classify import Augment, ClassifyConfig, augmented, epoch_plan, pick_codec
from pipeline.learning.data import image_files
from pipeline.learning.loop import ArmResult
from pipeline.learning.models import CellClassifier, NetConfig
from pipeline.learning.report import seed_summary, seed_table
from pipeline.loaders.common import flip_choice


def test_arms_are_selected_by_name_in_order():
    assert [a.name for a in select_arms(("full", "latent"))] == ["full", "latent"]
    assert [a.side for a in select_arms(("pixel", "full"))] == [64, 256]
    for bad in ((), ("latent", "latent"), ("latent", "jpeg")):
        with pytest.raises(ValueError, match="arms"):
            select_arms(bad)


def test_the_codec_fits_the_images_channels(tmp_path):
    grey = tmp_path / "grey" / "train" / "a"
    grey.mkdir(parents=True)
    for i, path in enumerate(image_files(DEFAULT_IMAGE_INPUT)[:3]):
        with Image.open(path) as im:
            im.convert("L").save(grey / f"{i}.png")
    assert pick_codec(ClassifyConfig(images=str(tmp_path / "grey"))) == "grey-16x-klt"
    assert pick_codec(ClassifyConfig(images=DEFAULT_IMAGE_INPUT)) == "rgb-16x-klt"
    assert pick_codec(ClassifyConfig(images=str(tmp_path / "grey"), codec="rgb-16x")) == "rgb-16x"


@pytest.mark.parametrize(("channels", "side", "cell"), [(4, 32, 1), (1, 64, 2), (1, 256, 8), (12, 32, 1)])
def test_every_stem_lands_on_the_same_grid(channels, side, cell):
    model = CellClassifier(channels, cell, 3, NetConfig(width=8), dropout=0.2).eval()
    x = torch.randn(2, channels, side, side)
    assert model.stem(x).shape == (2, 8, 32, 32)
    assert model(x).shape == (2, 3)
    trunk = sum(p.numel() for p in model.trunk.parameters())
    assert trunk == sum(p.numel() for p in CellClassifier(4, 1, 3, NetConfig(width=8)).trunk.parameters())


def test_every_arm_gets_the_same_plan_and_flips_follow_the_loader():
    keys = [f"k{i}" for i in range(50)]
    a, b = epoch_plan(3, 1, keys, 4), epoch_plan(3, 1, keys, 4)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    order, flips, shifts = a
    assert sorted(order.tolist()) == list(range(50))
    assert flips.tolist() == [flip_choice(3, 1, k) for k in keys]
    assert shifts.abs().max() <= 4 and shifts.abs().max() > 0
    assert not torch.equal(epoch_plan(3, 2, keys, 4)[0], order)
    assert epoch_plan(3, 1, keys, 0)[2].abs().sum() == 0


def test_latent_rolls_equal_the_encode_of_the_rolled_image():
    """The shift every arm gets, in whole grid positions, is the same image shift in each domain:
    on latents (cell 1) it equals encoding the 256x256 image shifted by 8 pixels (cell 8)."""
    codec = wc.load("grey-16x-klt").eval()
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(3, 1, 256, 256, generator=g) - 0.5) * 0.5
    x = torch.nn.functional.avg_pool2d(x, 5, 1, 2)  # smooth, like a photo
    shifts = torch.tensor([[1, -2], [0, 3], [-4, 4]])
    with torch.no_grad():
        z_of_rolled = codec.encode(augmented(x, None, shifts, 8))
        rolled_z = augmented(codec.encode(x), None, shifts, 1)
    assert torch.equal(z_of_rolled, rolled_z)
    flipped = augmented(x, torch.tensor([True, False, True]), torch.zeros(3, 2, dtype=torch.long), 8)
    assert torch.equal(flipped[0], x[0].flip(-1)) and torch.equal(flipped[1], x[1])


def _runs(values: dict[str, list[float]]) -> dict[str, list[ArmResult]]:
    return {
        arm: [ArmResult(f"{arm} s{i}", [1, 2, 2], 1, final={"accuracy": v}) for i, v in enumerate(vs)]
        for arm, vs in values.items()
    }


def test_seed_summary_and_the_verdicts():
    runs = _runs({"latent": [0.70, 0.72, 0.71], "pixel": [0.60, 0.62, 0.61], "full": [0.80, 0.82, 0.81]})
    s = seed_summary(runs, "accuracy")
    assert s["latent"]["mean"] == pytest.approx(0.71) and s["latent"]["std"] == pytest.approx(0.01)
    assert (s["full"]["min"], s["full"]["max"]) == (0.80, 0.82)
    v = comparison(s)
    assert v["gap full - pixel"] == pytest.approx(0.20)
    assert v["share of the gap the latents recover"] == pytest.approx(0.5)
    assert v["full beats pixel beyond the spread"] == "True"
    assert v["latent beats pixel beyond the spread"] == "True"
    overlapping = comparison(seed_summary(_runs({"latent": [0.61, 0.70], "pixel": [0.60, 0.62]}), "accuracy"))
    assert overlapping["latent beats pixel beyond the spread"] == "False"
    assert "share of the gap the latents recover" not in overlapping  # no full arm: no gap
    assert "| latent | 0.7100 | 0.0100 |" in seed_table(s)


def test_default_augmentation_is_exact_and_shared():
    cfg = ClassifyConfig()
    assert cfg.augment == Augment(flip=True, roll=4)
    assert set(cfg.arms) == set(ARMS) and cfg.seeds == 3
