"""Closed-form linear codec: the KLT (PCA) of the wavelet packet coefficients.

Each position's C*4^J (2-D) or C*2^J (1-D) wavelet packet coefficients form a vector X. With
mean mu and covariance V diag(lam) V^T, the best rank-k linear map (least squares in the
coefficient domain) keeps the k leading eigenvectors. Channel i of the latents is scaled by a gain:

    y = diag(g) V_k^T (X - mu)          X_hat = V_k diag(1/g) y_hat + mu

Two choices of g:
- gain=None, whitening: g_i = s / sqrt(lam_i), every channel has std s = compander.scale and uses
  the whole integer range (equal *relative* precision);
- gain=G, equal step: g_i = G, every channel is quantized with the same step (about
  1 / (1.48 G) in coefficient units near zero), which is the MSE-optimal bit allocation (reverse
  water-filling): weak channels get few levels, strong ones many. G is the rate knob.
Measured on held-out photos (docs/rate_distortion.md): whitening wastes rate on weak channels and
its compander crushes the heavy tails of the strong ones (edges): 32.3 dB at 1.17 bpp, where equal
step gives 34.0 dB at 0.63 bpp (G=20) or 32.5 dB at 0.36 bpp (G=5).
bior4.4 is nearly orthogonal, so least squares on the coefficients is close to least squares on
the signal.

The result is a codec with `decoder="linear"`: a baseline, a quick default, and (the encoder
half) the starting point of a deep codec's 1x1 encoder.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from pipeline.codec import CodecConfig, WaLLoC, build

MIN_EIGENVALUE = 1e-12  # keeps whitening finite for (numerically) empty directions


@dataclass(frozen=True)
class KLT:
    """Statistics of wavelet packet coefficient vectors, eigenvalues in descending order."""

    mean: Tensor  # (D,) float64
    eigvals: Tensor  # (D,) float64, descending
    eigvecs: Tensor  # (D, D) float64, columns are eigenvectors
    count: int  # vectors seen

    def energy_fraction(self, k: int) -> float:
        """Share of the (centered) coefficient variance kept by k components."""
        return float(self.eigvals[:k].sum() / self.eigvals.sum())


def coefficient_vectors(codec: WaLLoC, x: Tensor) -> Tensor:
    """(B, C, ...) signals -> (positions, D) wavelet packet coefficient vectors."""
    X = codec.analysis(x)  # (B, D, h, w) or (B, D, l)
    return X.flatten(2).transpose(1, 2).reshape(-1, X.shape[1])


@torch.no_grad()
def fit_klt(codec: WaLLoC, batches: Iterable[Tensor]) -> KLT:
    """Mean, covariance and eigendecomposition of the codec's wavelet packet coefficients (float64)."""
    total, outer, count = None, None, 0
    for x in batches:
        v = coefficient_vectors(codec, x.float()).double()
        total = v.sum(0) if total is None else total + v.sum(0)
        outer = v.T @ v if outer is None else outer + v.T @ v
        count += v.shape[0]
    if total is None or count < 2:
        raise ValueError("fit_klt needs at least one batch with two positions")
    mean = total / count
    cov = outer / count - torch.outer(mean, mean)
    eigvals, eigvecs = torch.linalg.eigh((cov + cov.T) / 2)
    order = torch.argsort(eigvals, descending=True)
    return KLT(mean=mean, eigvals=eigvals[order].clamp_min(0), eigvecs=eigvecs[:, order], count=count)


def channel_gains(klt: KLT, k: int, scale: float, gain: float | None = None) -> Tensor:
    """(k,) latent units per coefficient unit: whitening (gain None) or one equal-step gain."""
    if gain is None:
        return scale * klt.eigvals[:k].clamp_min(MIN_EIGENVALUE).rsqrt()
    if not gain > 0:
        raise ValueError(f"KLT gain must be positive, got {gain}")
    return torch.full((k,), float(gain), dtype=klt.eigvals.dtype)


def latent_stds(klt: KLT, k: int, scale: float, gain: float | None = None) -> Tensor:
    """(k,) standard deviation of each latent channel before companding."""
    return channel_gains(klt, k, scale, gain) * klt.eigvals[:k].clamp_min(MIN_EIGENVALUE).sqrt()


def encoder_weights(klt: KLT, k: int, scale: float, gain: float | None = None) -> tuple[Tensor, Tensor]:
    """(W (k, D), b (k,)) of the encoder y = W X + b."""
    W = channel_gains(klt, k, scale, gain)[:, None] * klt.eigvecs[:, :k].T
    return W, -W @ klt.mean


def decoder_weights(klt: KLT, k: int, scale: float, gain: float | None = None) -> tuple[Tensor, Tensor]:
    """(W (D, k), b (D,)) of the decoder X_hat = W y + b (the encoder's pseudo-inverse)."""
    return klt.eigvecs[:, :k] / channel_gains(klt, k, scale, gain)[None, :], klt.mean.clone()


@torch.no_grad()
def init_encoder_from_klt(codec: WaLLoC, klt: KLT, gain: float | None = None) -> WaLLoC:
    """Load the KLT encoder (whitening, or equal step at `gain`) into a codec's 1x1 encoder, in place."""
    if not codec.config.lightweight_encode:
        raise ValueError("KLT initialisation needs the 1x1 (lightweight) encoder")
    W, b = encoder_weights(klt, codec.config.latent_dim, codec.compander.scale, gain)
    enc = codec.encoder
    enc.weight.copy_(W.reshape(enc.weight.shape).to(enc.weight))
    enc.bias.copy_(b.to(enc.bias))
    return codec


@torch.no_grad()
def klt_codec(config: CodecConfig, klt: KLT, gain: float | None = None) -> WaLLoC:
    """A linear codec (1x1 encoder, 1x1 decoder) from a fitted KLT; config's decoder is forced to linear."""
    config = replace(config, decoder="linear", lightweight_encode=True, Ne=None)
    codec = init_encoder_from_klt(build(config), klt, gain)
    _set_linear_decoder(codec.decoder, *decoder_weights(klt, config.latent_dim, codec.compander.scale, gain))
    if getattr(codec, "post", None) is not None:
        init_identity_post_filter(codec)
    return codec.eval()


def _set_linear_decoder(dec: torch.nn.Module, W: Tensor, b: Tensor) -> None:
    """The 1x1 (2-D) or 3-tap (1-D) linear decoder as X_hat = W y + b."""
    weight = torch.zeros_like(dec.weight)
    if weight.dim() == 4:
        weight[:, :, 0, 0] = W
    else:  # kernel 3 over the L+2 latent frames: the centre tap lines up with frame t
        weight[:, :, 1] = W
    dec.weight.copy_(weight)
    dec.bias.copy_(b.to(dec.bias))


@torch.no_grad()
def init_residual_decoder_from_klt(codec: WaLLoC, klt: KLT, gain: float | None = None) -> WaLLoC:
    """A `decoder="residual"` codec's decoder as the KLT decoder, in place: the linear half is the
    KLT's pseudo-inverse, the deep half keeps its default init except for a zero last layer (so the
    sum starts as the KLT) and a first layer that sees every latent at unit scale."""
    c = codec.config
    if c.decoder != "residual":
        raise ValueError("init_residual_decoder_from_klt is for codecs with decoder='residual'")
    scale = codec.compander.scale
    _set_linear_decoder(codec.decoder.linear, *decoder_weights(klt, c.latent_dim, scale, gain))
    unit = 1 / latent_stds(klt, c.latent_dim, scale, gain)  # per latent channel
    deep = codec.decoder.deep
    if c.kind == "2d":
        deep.conv_in.weight.mul_(unit.view(1, -1, 1, 1).to(deep.conv_in.weight))
        deep.conv_out.weight.zero_()
        deep.conv_out.bias.zero_()
    else:
        w = deep.conv1.weight.detach().double() * unit.view(1, -1, 1)
        _set_weight_norm(deep.conv1, w)
        # weight norm: at g = 0 exactly the gradient of v is 0 and the output can only grow along
        # v's random direction (measured: held-out PSNR fell 1.5 dB in 200 steps); a tiny g keeps
        # the start at the KLT and lets Adam (scale-free) turn v from the first step
        _set_weight_norm(deep.conv2, deep.conv2.weight.detach().double() * RESIDUAL_START)
        if getattr(codec, "post", None) is not None:
            init_identity_post_filter(codec)
    return codec


# --- a deep decoder that starts as the KLT decoder ------------------------------------------------
STREAM_STD = 10.0  # std of each latent's copy in the decoder's residual stream; large, because Adam's
# steps are absolute: at this scale one step (~lr) moves conv_in and the zeroed branches by a small
# fraction of the signal (at 0.03 the first steps at lr 1e-4 wiped the KLT solution out)
CARRIER = 300.0  # +-CARRIER channels fix each GroupNorm group's mean (0) and variance (~CARRIER^2/2)
SILU_SHIFT, SILU_GAIN = 12.0, 4.0  # SiLU(12 + 4u) = 12 + 4u to 1e-4 for |u| < 0.6: a linear regime


@torch.no_grad()
def init_deep_decoder_from_klt(codec: WaLLoC, klt: KLT, gain: float | None = None) -> WaLLoC:
    """Set a 2-D deep (diffusers VAE) decoder to reproduce the KLT decoder, in place.

    Every residual branch (resnet conv2, attention output) starts at zero, so the body is the
    identity and the decoder is conv_out(SiLU(GroupNorm(conv_in(z)))). Group g carries latent g as
    (+h, -h, +CARRIER, -CARRIER): the group mean is exactly 0 and its variance is nearly constant,
    so GroupNorm is a fixed scale; the norm's affine puts SiLU in its linear range; conv_out undoes
    the scales and adds the mean. Training then starts from the KLT's PSNR and only has to learn
    what improves on it, instead of first learning a linear inverse from random weights (slow on
    a few CPU cores). Needs GroupNorm groups of >= 4 channels and >= latent_dim groups (Nd=128).
    1-D codecs: see _init_oobleck_from_klt."""
    c = codec.config
    if c.decoder != "deep":
        raise ValueError("init_deep_decoder_from_klt is for codecs with the deep decoder")
    if c.kind == "1d":
        if getattr(codec, "post", None) is not None:
            init_identity_post_filter(codec)
        return _init_oobleck_from_klt(codec, klt, gain)
    dec = codec.decoder
    norm = dec.conv_norm_out
    nd, groups = dec.conv_in.out_channels, norm.num_groups
    per = nd // groups
    if per < 4 or groups < c.latent_dim:
        raise ValueError(
            f"needs >= 4 channels per group and >= {c.latent_dim} groups; Nd={nd} has {groups}x{per}"
        )
    for name, module in dec.named_modules():  # zero the residual branches: the body is the identity
        if name.endswith("conv2") or name.endswith("to_out.0"):
            module.weight.zero_()
            module.bias.zero_()
    scale = codec.compander.scale
    a = STREAM_STD / latent_stds(klt, c.latent_dim, scale, gain)  # every latent's copy has std STREAM_STD
    sigma = ((STREAM_STD**2 + CARRIER**2) / 2) ** 0.5  # the group's standard deviation
    slope = SILU_GAIN * a / sigma  # d(norm output) / d(latent), per latent
    W, b = decoder_weights(klt, c.latent_dim, scale, gain)  # X = W z + b
    for w in (dec.conv_in.weight, dec.conv_in.bias, norm.weight, norm.bias, dec.conv_out.weight):
        w.zero_()
    for i in range(c.latent_dim):
        ch = i * per
        dec.conv_in.weight[ch, i, 1, 1] = a[i]
        dec.conv_in.weight[ch + 1, i, 1, 1] = -a[i]
        dec.conv_in.bias[ch + 2], dec.conv_in.bias[ch + 3] = CARRIER, -CARRIER
        norm.weight[ch], norm.bias[ch] = SILU_GAIN, SILU_SHIFT
        dec.conv_out.weight[:, ch, 1, 1] = (W[:, i] / slope[i]).to(dec.conv_out.weight)
    offset = (W / slope[None, :]).sum(1) * SILU_SHIFT  # remove SILU_SHIFT * (column sums), add the mean
    dec.conv_out.bias.copy_((b - offset).to(dec.conv_out.bias))
    return codec


RESIDUAL_START = 1e-4  # 1-D residual decoders: the deep half's last layer starts at this share of its init
SNAKE_LOG_ALPHA = -6.9  # Snake x + sin^2(a x)/b with a = 1e-3, b = 1: x + <3e-3 on the 10-std stream


def _set_weight_norm(module: torch.nn.Module, weight: Tensor) -> None:
    """Give a weight_norm'ed layer the effective weight `weight` (dim 0 slices with zero norm: g = 0)."""
    norms = weight.flatten(1).norm(dim=1).view(-1, *[1] * (weight.dim() - 1))
    module.weight_g.copy_(norms.to(module.weight_g))
    v = torch.where(norms > 0, weight, module.weight_v.detach().to(weight))  # keep v where g = 0
    module.weight_v.copy_(v.to(module.weight_v))


@torch.no_grad()
def _init_oobleck_from_klt(codec: WaLLoC, klt: KLT, gain: float | None = None) -> WaLLoC:
    """1-D: the Oobleck decoder (Nd = latent_dim wide) as the KLT decoder. Residual units start at zero
    (conv2 gain 0), the three Snakes on the main path are near-identity (small alpha), conv1 scales
    each latent into its own channel, the two stride-1 transposed convs pass frames through while
    dropping the encoder's first and last padding frame, and conv2 applies the KLT decoder.
    conv2 has no bias, so the KLT's (small: mean-removed audio) coefficient mean is left out."""
    c, dec = codec.config, codec.decoder
    k = c.latent_dim
    if dec.conv1.out_channels != k or any(b.conv_t1.out_channels != k for b in dec.block):
        raise ValueError("KLT initialisation of the Oobleck decoder needs Nd == latent_dim")
    eye = torch.eye(k, dtype=torch.float64)
    a = STREAM_STD / latent_stds(klt, k, codec.compander.scale, gain)  # per latent
    for name, module in dec.named_modules():
        if name.endswith("conv2") and "res_unit" in name:
            _set_weight_norm(module, torch.zeros(module.weight_v.shape, dtype=torch.float64))
            module.bias.zero_()
        if type(module).__name__ == "Snake1d" and "res_unit" not in name:
            module.alpha.fill_(SNAKE_LOG_ALPHA)
            module.beta.zero_()
    conv1 = torch.zeros(dec.conv1.weight_v.shape, dtype=torch.float64)
    conv1[:, :, 3] = torch.diag(a)
    _set_weight_norm(dec.conv1, conv1)
    dec.conv1.bias.zero_()
    for block, tap in zip(dec.block, (0, 1), strict=True):  # tap 0 drops the first frame, tap 1 the last
        w = torch.zeros(block.conv_t1.weight_v.shape, dtype=torch.float64)
        w[:, :, tap] = eye
        _set_weight_norm(block.conv_t1, w)
        block.conv_t1.bias.zero_()
    W, _ = decoder_weights(klt, k, codec.compander.scale, gain)
    conv2 = torch.zeros(dec.conv2.weight_v.shape, dtype=torch.float64)
    conv2[:, :, 3] = W / a[None, :]
    _set_weight_norm(dec.conv2, conv2)
    return codec


@torch.no_grad()
def init_identity_post_filter(codec: WaLLoC) -> None:
    """A 1-D codec's 129-tap post filter as a pass-through (centre tap 1 from each channel to itself),
    instead of a random filter that scrambles the synthesis output."""
    post = codec.post
    post.weight.zero_()
    post.bias.zero_()
    for ch in range(post.weight.shape[0]):
        post.weight[ch, ch, post.weight.shape[-1] // 2] = 1.0


def is_equal_step_klt(codec: WaLLoC) -> bool:
    """A linear codec whose metadata records the equal-step gain it was fitted with."""
    return codec.config.decoder == "linear" and bool((codec.metadata.get("training") or {}).get("klt_gain"))


@torch.no_grad()
def with_gain(codec: WaLLoC, gain: float) -> WaLLoC:
    """The same equal-step KLT codec at another gain (another rate), from its own weights.

    y = G V^T (X - mu) scales with G and its decoder with 1/G, so one fitted KLT gives a whole
    rate-distortion curve. Needs a linear codec whose metadata records its `klt_gain`."""
    if not is_equal_step_klt(codec):
        raise ValueError(f"{codec.name}: with_gain needs an equal-step KLT codec (linear, klt_gain recorded)")
    old = codec.metadata["training"]["klt_gain"]
    if not gain > 0:
        raise ValueError(f"KLT gain must be positive, got {gain}")
    out = build(codec.config)
    out.load_state_dict(codec.state_dict())
    ratio = gain / old
    out.encoder.weight.mul_(ratio)
    out.encoder.bias.mul_(ratio)
    out.decoder.weight.div_(ratio)
    out.name = f"{codec.name} G={gain:g}"
    out.metadata = {"training": {"klt_gain": gain}}
    return out.freeze()
