import math

import torch

from pipeline.codec import CodecConfig, build
from pipeline.training.klt import (
    fit_klt,
    init_deep_decoder_from_klt,
    init_encoder_from_klt,
    init_residual_decoder_from_klt,
    klt_codec,
    latent_stds,
    with_gain,
)

from .helpers import batch

CONFIG = CodecConfig(kind="2d", channels=3, J=2, latent_dim=6, decoder="linear")


def _mse(codec, x):
    return torch.mean((codec.decode(codec.encode(x)) - x) ** 2).item()


def test_klt_codec_beats_a_random_linear_codec_and_whitens():
    train, test = batch(24, offset=0), batch(8)
    klt = fit_klt(build(CONFIG), [train[:12], train[12:]])
    codec = klt_codec(CONFIG, klt)
    random_codec = build(CONFIG).eval()
    assert _mse(codec, test) < 0.2 * _mse(random_codec, test)

    # encoder: y = s * diag(lam)^-1/2 V^T (X - mu): rows are orthogonal, and on the fitting data
    # every latent channel has mean 0 and standard deviation s (= compander.scale), uncorrelated
    s = codec.compander.scale
    W = codec.encoder.weight.detach().double().flatten(1)  # (k, D)
    gram = W @ W.T
    assert torch.allclose(gram, torch.diag(torch.diag(gram)), atol=1e-6 * gram.abs().max())
    with torch.no_grad():
        y = codec.encode_continuous(train).double().transpose(0, 1).flatten(1)  # (k, positions)
    assert torch.allclose(y.mean(1), torch.zeros(6, dtype=torch.float64), atol=1e-3 * s)
    assert torch.allclose(
        torch.cov(y, correction=0), s**2 * torch.eye(6, dtype=torch.float64), atol=1e-3 * s**2
    )
    # decoder o encoder (without quantisation) is the projection onto the top-k subspace: idempotent
    D = codec.decoder.weight.detach().double().flatten(1)  # (D, k)
    P = D @ W
    assert torch.allclose(P @ P, P, atol=1e-6)
    assert klt.energy_fraction(6) > 0.5


def test_klt_initialises_a_deep_codec_encoder():
    deep = build(CodecConfig(kind="2d", channels=3, J=2, latent_dim=6, Nd=32))
    klt = fit_klt(deep, [batch(8, offset=0)])
    init_encoder_from_klt(deep, klt)
    linear = klt_codec(CONFIG, klt)
    assert torch.equal(deep.encoder.weight, linear.encoder.weight)
    assert torch.equal(deep.encoder.bias, linear.encoder.bias)


def test_klt_codec_1d_aligns_latent_frames():
    cfg = CodecConfig(kind="1d", channels=2, J=3, latent_dim=8, decoder="linear")
    t = torch.arange(512, dtype=torch.float32)
    x = torch.stack([0.2 * torch.sin(t * f) * torch.tensor([[1.0], [0.7]]) for f in (0.05, 0.11, 0.3, 0.02)])
    codec = klt_codec(cfg, fit_klt(build(cfg), [x]))
    assert _mse(codec, x) < 1e-2 * x.pow(2).mean().item()


def _psnr(codec, x):
    return -10 * math.log10(_mse(codec, x))


def test_deep_decoder_starts_as_the_klt_decoder_2d():
    cfg = CodecConfig(kind="2d", channels=3, J=1, latent_dim=4, Nd=128)  # 32 GroupNorm groups of 4
    x = batch(4, size=16, offset=0)
    deep = build(cfg)
    klt = fit_klt(deep, [x])
    init_encoder_from_klt(deep, klt)
    init_deep_decoder_from_klt(deep, klt)
    linear = klt_codec(cfg, klt)
    assert abs(_psnr(deep.eval(), x) - _psnr(linear, x)) < 0.1
    assert _psnr(linear, x) > _psnr(build(cfg).eval(), x) + 10


def test_deep_decoder_starts_as_the_klt_decoder_1d():
    cfg = CodecConfig(kind="1d", channels=2, J=3, latent_dim=8, Nd=8, post_filter=True)
    t = torch.arange(1024, dtype=torch.float32)
    x = torch.stack([0.2 * torch.sin(t * f) * torch.tensor([[1.0], [0.7]]) for f in (0.05, 0.11, 0.3, 0.02)])
    x = x + 0.01 * torch.randn(x.shape)
    x = x - x.mean(-1, keepdim=True)  # as the audio loader does: the Oobleck conv2 has no bias for the mean
    deep = build(cfg)
    klt = fit_klt(deep, [x])
    init_encoder_from_klt(deep, klt)
    init_deep_decoder_from_klt(deep, klt)
    linear = klt_codec(cfg, klt)
    assert abs(_psnr(deep.eval(), x) - _psnr(linear, x)) < 0.1


def test_equal_step_klt_gives_every_channel_one_gain_and_trades_rate_for_error():
    train, test = batch(24, offset=0), batch(8)
    klt = fit_klt(build(CONFIG), [train])
    fine, coarse = klt_codec(CONFIG, klt, gain=40.0), klt_codec(CONFIG, klt, gain=4.0)
    for codec, gain in ((fine, 40.0), (coarse, 4.0)):
        W = codec.encoder.weight.detach().double().flatten(1)
        # y = G V^T (X - mu): every row has norm G
        assert torch.allclose(W.norm(dim=1), torch.full((6,), gain, dtype=torch.float64))
    with torch.no_grad():
        y = fine.encode_continuous(train).double().transpose(0, 1).flatten(1)
    stds = latent_stds(klt, 6, fine.compander.scale, 40.0)
    assert torch.allclose(y.std(1, correction=0), stds, rtol=1e-3)
    assert bool((stds[:-1] >= stds[1:]).all())  # strong channels first: more levels for them
    distinct = [len(torch.unique(c.encode(test))) for c in (fine, coarse)]
    assert distinct[0] > distinct[1]  # the coarse step uses fewer integers (fewer bits)...
    assert _mse(fine, test) < _mse(coarse, test)  # ...and loses more
    try:
        klt_codec(CONFIG, klt, gain=0.0)
    except ValueError as err:
        assert "positive" in str(err)
    else:
        raise AssertionError("a zero gain was accepted")


def _residual_and_klt(cfg: CodecConfig, x: torch.Tensor, gain: float):
    """(residual codec initialised from the KLT of x, the KLT codec itself, its latents of x)."""
    codec = build(cfg)
    klt = fit_klt(codec, [x])
    init_encoder_from_klt(codec, klt, gain=gain)
    init_residual_decoder_from_klt(codec, klt, gain=gain)
    linear = klt_codec(cfg, klt, gain=gain)
    return codec, linear, linear.encode(x)


def test_residual_decoder_starts_as_the_klt_decoder_and_keeps_its_linear_half():
    cfg = CodecConfig(kind="2d", channels=3, J=1, latent_dim=4, Nd=32, decoder="residual")
    x = batch(4, size=16, offset=0)
    codec, linear, z = _residual_and_klt(cfg, x, gain=8.0)
    assert torch.equal(codec.eval().encode(x), z)
    assert torch.allclose(codec.decode(z), linear.decode(z), atol=1e-5)
    assert torch.equal(codec.decoder.linear.weight, linear.decoder.weight)
    assert codec.decoder.deep.conv_in.weight.abs().sum() > 0  # the deep half is live, its output zero


def test_residual_decoder_starts_as_the_klt_decoder_1d():
    cfg = CodecConfig(kind="1d", channels=2, J=3, latent_dim=8, Nd=16, decoder="residual", post_filter=True)
    t = torch.arange(1024, dtype=torch.float32)
    x = torch.stack([0.2 * torch.sin(t * f) * torch.tensor([[1.0], [0.7]]) for f in (0.05, 0.11, 0.3, 0.02)])
    codec, linear, z = _residual_and_klt(cfg, x, gain=30.0)
    got, want = codec.eval().decode(z), linear.decode(z)
    assert not torch.equal(got, want)  # the deep half's last layer is tiny, not zero (weight norm)
    assert torch.allclose(got, want, atol=1e-3)
    assert codec.decoder.deep.conv2.weight_g.abs().min() > 0


def test_with_gain_rebuilds_the_klt_codec_at_another_rate():
    train = batch(16, offset=0)
    klt = fit_klt(build(CONFIG), [train])
    at10 = klt_codec(CONFIG, klt, gain=10.0)
    at10.metadata = {"training": {"klt_gain": 10.0}}
    moved = with_gain(at10, 3.0)
    direct = klt_codec(CONFIG, klt, gain=3.0)
    assert torch.allclose(moved.encoder.weight, direct.encoder.weight, rtol=1e-5)
    assert torch.allclose(moved.decoder.weight, direct.decoder.weight, rtol=1e-5)
    assert torch.equal(moved.encode(train), direct.encode(train))
    whitened = klt_codec(CONFIG, klt)  # no klt_gain recorded: refused, not silently wrong
    try:
        with_gain(whitened, 3.0)
    except ValueError as err:
        assert "equal-step" in str(err)
    else:
        raise AssertionError("with_gain accepted a codec without a recorded gain")
