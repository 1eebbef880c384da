import math

import torch

from pipeline.codec import CodecConfig, build
from pipeline.training.codec_loop import (
    CHECKPOINT,
    CodecTrainConfig,
    load_checkpoint,
    log_cosine_warmup,
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


def test_training_reduces_the_loss(tmp_path):
    torch.manual_seed(0)
    codec = build(TINY)
    result = train(codec, SmoothImages(), batch(4), _cfg(steps=40, warmup_steps=5, plateau_every=100),
                   tmp_path, progress=False)  # fmt: skip
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert result.step == 40 and last < 0.5 * first
    assert result.val_psnr[-1][1] > result.val_psnr[0][1]
    assert (tmp_path / "log.jsonl").read_text().count("\n") == len(result.val_psnr)


def test_resume_reproduces_uninterrupted_training(tmp_path):
    data, valid = SmoothImages(), batch(2)
    torch.manual_seed(1)
    straight = build(TINY)
    init = {k: v.clone() for k, v in straight.state_dict().items()}
    a = train(straight, data, valid, _cfg(steps=8), tmp_path / "a", progress=False)

    first = build(TINY)
    first.load_state_dict(init)
    train(first, data, valid, _cfg(steps=5), tmp_path / "b", progress=False)  # "interrupted" at 5
    resumed = build(TINY)  # a fresh process: different random init, overwritten by the checkpoint
    b = train(resumed, data, valid, _cfg(steps=8), tmp_path / "b", progress=False)

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
