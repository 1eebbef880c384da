import math

import pytest
import torch

from pipeline.codec import CodecConfig, build
from pipeline.training.codec_loop import (
    CHECKPOINT,
    CodecTrainConfig,
    load_checkpoint,
    log_cosine_warmup,
    lr_factor,
    train,
)

from .helpers import SmoothImages, batch

TINY = CodecConfig(kind="2d", channels=3, J=2, latent_dim=6, Nd=32)


def _cfg(**kw) -> CodecTrainConfig:
    base = dict(batch_size=4, lr=2e-3, min_lr=1e-5, warmup_steps=4, plateau_every=2, plateau_patience=1,
                val_every=5, ckpt_every=3, device="cpu")  # fmt: skip
    return CodecTrainConfig(**{**base, **kw})


def test_warmup_is_a_log_cosine_from_min_lr_to_lr():
    cfg = CodecTrainConfig(lr=1e-3, min_lr=1e-7, warmup_steps=100)
    assert log_cosine_warmup(0, cfg) * cfg.lr == math.pow(10, -7)
    assert math.isclose(log_cosine_warmup(50, cfg) * cfg.lr, 1e-5)  # half way in log space
    assert log_cosine_warmup(100, cfg) == 1.0 == log_cosine_warmup(500, cfg)


def test_cosine_schedule_warms_up_then_decays_to_its_floor():
    cfg = CodecTrainConfig(steps=1000, lr=1e-3, min_lr=1e-7, warmup_steps=100, lr_floor=0.1)
    assert lr_factor(50, cfg) == log_cosine_warmup(50, cfg)
    assert lr_factor(100, cfg) == 1.0
    assert math.isclose(lr_factor(550, cfg), 0.55)  # half way down: (1 + floor) / 2
    assert math.isclose(lr_factor(1000, cfg), 0.1) and math.isclose(lr_factor(5000, cfg), 0.1)
    after = [lr_factor(s, cfg) for s in range(100, 1001)]
    assert all(a >= b for a, b in zip(after, after[1:], strict=False))  # never rises again
    low = CodecTrainConfig(steps=1000, lr=1e-3, min_lr=1e-5, warmup_steps=100, lr_floor=0.0)
    assert lr_factor(1000, low) * low.lr == pytest.approx(1e-5)  # the floor is never below min_lr
    plateau = CodecTrainConfig(steps=1000, warmup_steps=100, schedule="plateau")
    assert lr_factor(900, plateau) == 1.0  # ReduceLROnPlateau scales it from there


def test_cosine_lr_follows_the_schedule_in_training(tmp_path):
    torch.manual_seed(0)
    cfg = _cfg(steps=12, warmup_steps=2, lr_floor=0.25, val_every=100)
    train(build(TINY), SmoothImages(), batch(2), cfg, tmp_path, progress=False)
    state = load_checkpoint(tmp_path / CHECKPOINT)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(cfg.lr * 0.25)


def test_training_reduces_the_loss(tmp_path):
    torch.manual_seed(0)
    codec = build(TINY)
    result = train(codec, SmoothImages(), batch(4), _cfg(steps=40, warmup_steps=5, plateau_every=100),
                   tmp_path, progress=False)  # fmt: skip
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert result.step == 40 and last < 0.5 * first
    assert result.val_psnr[-1][1] > result.val_psnr[0][1]
    assert (tmp_path / "log.jsonl").read_text().count("\n") == len(result.val_psnr)


@pytest.mark.parametrize("schedule", ["cosine", "plateau"])
def test_resume_reproduces_uninterrupted_training(tmp_path, schedule):
    data, valid = SmoothImages(), batch(2)
    cfg = _cfg(steps=8, schedule=schedule)
    torch.manual_seed(1)
    straight = build(TINY)
    init = {k: v.clone() for k, v in straight.state_dict().items()}
    a = train(straight, data, valid, cfg, tmp_path / "a", progress=False)

    first = build(TINY)
    first.load_state_dict(init)
    half = train(first, data, valid, cfg, tmp_path / "b", progress=False, stop_at=4)  # N/2, then stop
    assert half.step == 4 and load_checkpoint(tmp_path / "b" / CHECKPOINT)["step"] == 4
    resumed = build(TINY)  # a fresh process: different random init, overwritten by the checkpoint
    b = train(resumed, data, valid, cfg, tmp_path / "b", progress=False)  # the other N/2

    assert a.step == b.step == 8 and a.losses == b.losses and a.val_psnr == b.val_psnr
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    sa, sb = load_checkpoint(tmp_path / "a" / CHECKPOINT), load_checkpoint(tmp_path / "b" / CHECKPOINT)
    for key in ("step", "warmup", "plateau", "losses"):
        assert sa[key] == sb[key], key
    oa, ob = sa["optimizer"], sb["optimizer"]
    assert oa["param_groups"] == ob["param_groups"]
    for i, state in oa["state"].items():
        for name, value in state.items():
            assert torch.equal(value, ob["state"][i][name]), (i, name)
    assert torch.equal(sa["rng"][0]["cpu"], sb["rng"][0]["cpu"])
