"""WaLLoC codecs (Jacobellis & Yadwadkar, arXiv 2412.09405), 2-D and 1-D.

    x (B, C, H, W) in [-0.5, 0.5]
      -> analysis: J-level wavelet packet transform        (B, C*4^J, H/2^J, W/2^J)
      -> encoder: 1x1 conv, or a shallow conv block         (B, latent_dim, h, w)
      -> compander + rounding                               int8 latents in +-(2^(bits-1)-1)
      -> inverse companding -> decoder (deeper)             (B, C*4^J, h, w)
      -> synthesis -> clamp to [-0.5, 0.5]                  (B, C, H, W)

1-D (audio) is the same with C x L -> C*2^J x L/2^J, the Oobleck encoder/decoder, and an optional
post filter. The conv blocks are diffusers' autoencoder blocks, as in the published checkpoints.
The codec knows nothing of files, Ray or formats.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import hashing, wavelets
from .bottleneck import Compander
from .config import CodecConfig
from .hashing import codec_hash


def _diffusers_blocks():
    """diffusers' autoencoder modules, imported when a codec has deep blocks (about 2 s: a 1x1 KLT
    codec, the default, never pays it, nor do the encode workers that run one)."""
    from diffusers.models import autoencoders

    return autoencoders


LATENT_DTYPE = torch.int8  # holds every latent_bits in [2, 8]
ENCODE_CHUNK_BYTES = 3 << 20  # conv encoders: cache-sized chunks (analysis + wide activations)
FUSED_ENCODE_CHUNK_BYTES = 32 << 20  # 1x1 encoders: per-worker chunks (bound the float latents)


class NonFiniteError(ValueError):
    """NaN or Inf where a finite number is needed: the sample must not reach a shard."""


def check_finite(x: Tensor, what: str) -> None:
    """Raise NonFiniteError naming `what` and the counts, when x holds NaN or Inf (one reduction)."""
    if not bool(torch.isfinite(x).all()):
        nan = int(torch.isnan(x).sum())
        raise NonFiniteError(f"non-finite values in {what} ({nan} NaN, {int(torch.isinf(x).sum())} Inf)")


def centered_padding(size: int, multiple: int) -> tuple[int, int]:
    """(before, after) padding that brings size to a multiple, split like walloc.compute_padding."""
    total = -size % multiple
    return total // 2, total - total // 2


def _pad_last_axes(x: Tensor, pads: list[tuple[int, int]]) -> Tensor:
    """Reflect-pad the trailing axes; replicate where an axis is too short to reflect."""
    flat = [p for pair in reversed(pads) for p in pair]  # F.pad wants the last axis first
    if not any(flat):
        return x
    sizes = x.shape[-len(pads) :]
    reflectable = all(max(p) < s for p, s in zip(pads, sizes, strict=True))
    return F.pad(x, flat, mode="reflect" if reflectable else "replicate")


def _pointwise_conv(module: nn.Module) -> bool:
    """A plain 1x1 convolution (the lightweight encoder), which encode fuses into the transform."""
    return (
        isinstance(module, (nn.Conv1d, nn.Conv2d))
        and all(k == 1 for k in module.kernel_size)
        and all(s == 1 for s in module.stride)
        and module.groups == 1
        and module.padding_mode == "zeros"
        and isinstance(module.padding, tuple)
        and (isinstance(module, nn.Conv1d) or not any(module.padding))
    )


class ResidualDecoder(nn.Module):
    """A linear (1x1) decoder plus a deep decoder, summed: the `decoder="residual"` codecs.

    Not in the reference. The linear half can be the closed-form KLT decoder and the deep half start
    at zero output, so training starts at the KLT's quality and the deep half only has to learn what
    a linear map cannot recover (detail, dequantization) with its layers at their usual scales.
    """

    def __init__(self, linear: nn.Module, deep: nn.Module):
        super().__init__()
        self.linear = linear
        self.deep = deep

    def forward(self, z: Tensor) -> Tensor:
        return self.linear(z) + self.deep(z)


def _join_decoders(linear: nn.Module | None, deep: nn.Module | None) -> nn.Module:
    """The codec's decoder: the linear one, the deep one, or both summed (decoder="residual")."""
    if linear is None or deep is None:
        return linear if deep is None else deep
    return ResidualDecoder(linear, deep)


class WaLLoC(nn.Module):
    """Shared encode/decode logic; subclasses build the modules and pick the transform."""

    config: CodecConfig

    def __init__(self, config: CodecConfig):
        super().__init__()
        self.config = config
        self.compander = Compander(config.latent_bits)
        self.name: str | None = None  # set by load() for bundled / saved codecs
        self.metadata: dict = {}  # free-form: training data, sample rate, figures
        self.source: str | None = None  # where it was loaded from
        self.frozen_hash: str | None = None  # the verified hash of a loaded codec
        self.frozen_encoder_hash: str | None = None  # and its encoder hash

    @property
    def hash(self) -> str:
        """Content hash (sha256 hex) of config + weights; cached for codecs loaded from files."""
        if self.frozen_hash is not None:
            return self.frozen_hash
        return codec_hash(self.config, self.state_dict())

    @property
    def encoder_hash(self) -> str:
        """Hash (sha256 hex) of what determines the latents: transform, encoder, quantizer (hashing.py).
        Codecs with equal encoder hashes write identical latents and may decode each other's."""
        if self.frozen_encoder_hash is not None:
            return self.frozen_encoder_hash
        return hashing.encoder_hash(self.config, self.state_dict())

    def freeze(self) -> WaLLoC:
        """Eval mode, no grads, and the hashes computed once (call after training, before encoding)."""
        self.eval().requires_grad_(False)
        self.frozen_hash = self.frozen_encoder_hash = None
        self.frozen_hash, self.frozen_encoder_hash = self.hash, self.encoder_hash
        return self

    def identity(self) -> dict:
        """What a manifest records of the codec: {"name", "hash", "encoder_hash", "config"}."""
        return {
            "name": self.name,
            "hash": self.hash,
            "encoder_hash": self.encoder_hash,
            "config": self.config.to_dict(),
        }

    def decodes(self, codec_hash: str, encoder_hash: str | None = None) -> bool:
        """Whether latents written by the codec with these hashes may be decoded by this one: the
        same codec, or one with the same encoder (None: the writer's encoder hash is unknown)."""
        return codec_hash == self.hash or (encoder_hash is not None and encoder_hash == self.encoder_hash)

    # --- transform (subclasses) ------------------------------------------------------------
    def analysis(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def synthesis(self, X: Tensor) -> Tensor:
        raise NotImplementedError

    def _signal_dims(self) -> int:
        return 2 if self.config.kind == "2d" else 1

    # --- public API -------------------------------------------------------------------------
    def analysis_one_level(self, x: Tensor) -> Tensor:
        """One wavelet packet level, the reference's `analysis_one_level`."""
        fn = wavelets.analysis_2d if self.config.kind == "2d" else wavelets.analysis_1d
        return fn(x, 1)

    def pad(self, x: Tensor) -> Tensor:
        """Reflect-pad (centered) so every signal axis is a multiple of 2^J."""
        pads = [centered_padding(s, self.config.block) for s in x.shape[-self._signal_dims() :]]
        return _pad_last_axes(x, pads)

    def crop(self, x: Tensor, size: tuple[int, ...]) -> Tensor:
        """Undo `pad`: the centered crop of x's signal axes to `size`."""
        for axis, s in enumerate(size, start=x.dim() - len(size)):
            before, _ = centered_padding(s, self.config.block)
            x = x.narrow(axis, before, s)
        return x

    def encode_continuous(self, x: Tensor) -> Tensor:
        """Analysis + encoder: the latent before companding (the reference's `latent_linear`)."""
        return self.encoder(self.analysis(x))

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """x in [-0.5, 0.5], (B, C, H, W) or (B, C, L) -> int8 latents. Pads odd sizes (see pad)."""
        self._check_input(x)
        x = self.pad(x)
        per_item = x[0].numel() * x.element_size()
        if not _pointwise_conv(self.encoder):  # conv encoders: batched, threads inside each op
            size = max(1, ENCODE_CHUNK_BYTES // max(per_item, 1))
            out = [self._encode_chunk(chunk) for chunk in x.split(size)]
            return torch.cat(out) if len(out) > 1 else out[0]
        # 1x1 encoders: the CPU threads each encode a share of the batch end to end (transform,
        # encoder, compander), single-threaded; on other devices this is one loop over chunks
        out = torch.empty(
            (len(x), *self.latent_shape(tuple(x.shape[1:]))), dtype=LATENT_DTYPE, device=x.device
        )
        size = max(1, FUSED_ENCODE_CHUNK_BYTES // max(per_item, 1))

        def run(first: int, stop: int) -> None:
            for start in range(first, stop, size):
                end = min(start + size, stop)
                out[start:end] = self._encode_chunk(x[start:end])

        wavelets.batch_parallel(x, run)
        return out

    def _encode_chunk(self, x: Tensor) -> Tensor:
        enc = self.encoder
        if _pointwise_conv(enc):
            # the 1x1 encoder is fused into the transform (wavelets.analysis_*_linear): latents come
            # straight from the WPT's natural memory layout, never the reference's band layout
            if self.config.kind == "2d":
                y = wavelets.analysis_2d_linear(x, self.config.J, enc.weight, enc.bias)
            else:
                y = wavelets.analysis_1d_linear(x, self.config.J, enc.weight, enc.bias)
                p = enc.padding[0]
                if p:  # zero frames through the 1x1 conv: the bias alone, as the reference computes
                    y = F.pad(y, (p, p))
                    if enc.bias is not None:
                        y[..., :p] = enc.bias[:, None]
                        y[..., -p:] = enc.bias[:, None]
        else:
            y = self.encode_continuous(x)
        check_finite(y, "the latent before quantization")  # a NaN would cast to an arbitrary int8
        y = self.compander.to_uniform(y)
        return torch.round_(y).to(LATENT_DTYPE)

    @torch.no_grad()
    def decode(self, z: Tensor, size: tuple[int, ...] | None = None) -> Tensor:
        """Latents -> reconstruction clamped to [-0.5, 0.5]; `size` crops padding added by encode."""
        x_hat = self.synthesize(self.decode_bands(z.float())).clamp(-0.5, 0.5)
        return self.crop(x_hat, size) if size is not None else x_hat

    def decode_bands(self, z: Tensor) -> Tensor:
        """(Quantized or noisy) latents -> wavelet packet coefficients (the reference's wpt_hat)."""
        return self.decoder(self.compander.to_normal(z))

    def synthesize(self, X_hat: Tensor) -> Tensor:
        """Synthesis, plus whatever the codec applies after it (the 1-D post filter)."""
        return self.synthesis(X_hat)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Training/eval pass: noise (train) or rounding (eval) in the bottleneck, no clamping."""
        X = self.analysis(x)
        latent = self.compander(self.encoder(X))
        X_hat = self.decode_bands(latent)
        return {"x_hat": self.synthesize(X_hat), "X": X, "X_hat": X_hat, "latent": latent}

    def to_bytes(self, z: Tensor, *, method: str = "zstd", size: tuple[int, ...] | None = None) -> bytes:
        """Lossless entropy coding of latents, with a header (shape, bits, codec and encoder hash, size)."""
        from . import entropy

        return entropy.encode_latents(
            z,
            bits=self.config.latent_bits,
            codec_hash=self.hash,
            encoder_hash=self.encoder_hash,
            method=method,
            size=size,
        )

    def from_bytes(self, data: bytes) -> Tensor:
        """Exact inverse of to_bytes. Accepts latents written by this codec or by one with the same
        encoder hash (identical latents, another decoder); refuses any other encoder's. A version-1
        header records the full hash only, so there only this very codec is accepted."""
        from . import entropy

        z, header = entropy.decode_latents(data)
        if not self.decodes(header.codec_hash, header.encoder_hash):
            written = f"codec {header.codec_hash[:12]}"
            if header.encoder_hash is not None:
                written += f" (encoder {header.encoder_hash[:12]})"
            raise entropy.LatentFormatError(
                f"latents were written by {written}, this codec is {self.hash[:12]} (encoder "
                f"{self.encoder_hash[:12]}): another encoder's latents would decode to wrong signals"
            )
        return z

    # --- helpers ----------------------------------------------------------------------------
    def latent_shape(self, signal_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Latent shape (without batch) for a signal of shape (C, H, W) / (C, L), after padding."""
        raise NotImplementedError

    def _check_input(self, x: Tensor) -> None:
        want = self._signal_dims() + 2
        if x.dim() != want:
            raise ValueError(f"expected a batched tensor with {want} dims, got shape {tuple(x.shape)}")
        if x.shape[1] != self.config.channels:
            raise ValueError(f"codec takes {self.config.channels} channels, input has {x.shape[1]}")
        if not x.is_floating_point():
            raise TypeError(f"expected float input in [-0.5, 0.5], got {x.dtype}")


class WaLLoC2D(WaLLoC):
    """Images and rasters with any channel count."""

    def __init__(self, config: CodecConfig):
        super().__init__(config)
        c = config
        wide = c.channels * c.bands
        if c.lightweight_encode:
            self.encoder = nn.Conv2d(wide, c.latent_dim, kernel_size=1)
        else:
            self.encoder = _diffusers_blocks().vae.Encoder(
                in_channels=wide,
                out_channels=c.latent_dim,
                down_block_types=("DownEncoderBlock2D",),
                block_out_channels=(c.Ne,),
                layers_per_block=2,
                norm_num_groups=32,
                act_fn="silu",
                double_z=False,
                mid_block_add_attention=True,
            )
        linear = nn.Conv2d(c.latent_dim, wide, kernel_size=1) if c.decoder != "deep" else None
        deep = None
        if c.decoder != "linear":
            deep = _diffusers_blocks().vae.Decoder(
                in_channels=c.latent_dim,
                out_channels=wide,
                up_block_types=("UpDecoderBlock2D",),
                block_out_channels=(c.Nd,),
                layers_per_block=2,
                norm_num_groups=32,
                act_fn="silu",
                mid_block_add_attention=True,
            )
        self.decoder = _join_decoders(linear, deep)

    def analysis(self, x: Tensor) -> Tensor:
        return wavelets.analysis_2d(x, self.config.J)

    def synthesis(self, X: Tensor) -> Tensor:
        return wavelets.synthesis_2d(X, self.config.J)

    def latent_shape(self, signal_shape: tuple[int, ...]) -> tuple[int, ...]:
        _, h, w = signal_shape
        b = self.config.block
        return (self.config.latent_dim, -(-h // b), -(-w // b))


class WaLLoC1D(WaLLoC):
    """Audio with any channel count. Latents have L/2^J + 2 frames, like the reference."""

    def __init__(self, config: CodecConfig):
        super().__init__(config)
        c = config
        wide = c.channels * c.bands
        if c.lightweight_encode:
            # padding=1 reproduces the reference (one extra frame each side, decoded away)
            self.encoder = nn.Conv1d(wide, c.latent_dim, kernel_size=1, padding=1)
        else:
            self.encoder = _diffusers_blocks().autoencoder_oobleck.OobleckEncoder(
                encoder_hidden_size=c.latent_dim,
                audio_channels=wide,
                downsampling_ratios=[1, 1],
                channel_multiples=[c.Ne // c.latent_dim] * 2,
            )
        linear = nn.Conv1d(c.latent_dim, wide, kernel_size=3) if c.decoder != "deep" else None  # L+2 -> L
        deep = None
        if c.decoder != "linear":
            deep = _diffusers_blocks().autoencoder_oobleck.OobleckDecoder(
                channels=c.latent_dim,
                input_channels=c.latent_dim,
                audio_channels=wide,
                upsampling_ratios=[1, 1],
                channel_multiples=[c.Nd // c.latent_dim] * 2,
            )
        self.decoder = _join_decoders(linear, deep)
        self.post = nn.Conv1d(c.channels, c.channels, 129, padding=64) if c.post_filter else None

    def analysis(self, x: Tensor) -> Tensor:
        return wavelets.analysis_1d(x, self.config.J)

    def synthesis(self, X: Tensor) -> Tensor:
        return wavelets.synthesis_1d(X, self.config.J)

    def synthesize(self, X_hat: Tensor) -> Tensor:
        x = self.synthesis(X_hat)
        return self.post(x) if self.post is not None else x

    def latent_shape(self, signal_shape: tuple[int, ...]) -> tuple[int, ...]:
        _, length = signal_shape
        return (self.config.latent_dim, -(-length // self.config.block) + 2)


def build(config: CodecConfig) -> WaLLoC:
    """A freshly initialised codec for a config."""
    return WaLLoC2D(config) if config.kind == "2d" else WaLLoC1D(config)
