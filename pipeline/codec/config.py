"""Codec configuration: the architecture of a WaLLoC codec, as a frozen, validated dataclass."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from .bottleneck import check_bits

DECODERS = ("deep", "linear", "residual")
REFERENCE_KEYS = ("channels", "J", "Ne", "Nd", "latent_dim", "latent_bits", "lightweight_encode")


@dataclass(frozen=True)
class CodecConfig:
    """Everything needed to build a codec's modules (weights live in the checkpoint).

    Field names follow the reference's JSON (channels, J, Ne, Nd, ...) so published configs map 1:1.
    """

    kind: Literal["2d", "1d"]  # images/rasters (C x H x W) or audio (C x L)
    channels: int  # signal channels: 3 for RGB, 1 grayscale, 2 stereo, any band count
    J: int  # wavelet packet levels: 2-D reduces each side by 2^J, 1-D the length by 2^J
    latent_dim: int  # latent channels per position
    latent_bits: int = 8  # latents are integers in +-(2^(bits-1)-1)
    lightweight_encode: bool = True  # 1x1 conv encoder (else KL encoder block / Oobleck encoder)
    Ne: int | None = None  # width of the conv encoder (unused by the 1x1 encoder)
    Nd: int = 768  # width of the decoder
    post_filter: bool = False  # 1-D only: 129-tap conv after synthesis
    # deep: the reference's decoder; linear: a 1x1 conv (closed-form / PCA baseline); residual: the
    # two summed, so a deep decoder learns only what a linear one misses (model.ResidualDecoder)
    decoder: Literal["deep", "linear", "residual"] = "deep"

    def __post_init__(self) -> None:
        if self.kind not in ("2d", "1d"):
            raise ValueError(f"kind must be '2d' or '1d', got {self.kind!r}")
        if self.channels < 1 or self.latent_dim < 1:
            raise ValueError("channels and latent_dim must be positive")
        if not 1 <= self.J <= 12:
            raise ValueError(f"J must be in [1, 12], got {self.J}")
        check_bits(self.latent_bits)
        if not self.lightweight_encode and not self.Ne:
            raise ValueError("the conv encoder needs Ne (its width)")
        if self.post_filter and self.kind != "1d":
            raise ValueError("post_filter exists only for 1-D codecs")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {self.decoder!r}")

    @property
    def bands(self) -> int:
        """Wavelet packet bands per signal channel: 4^J (2-D) or 2^J (1-D)."""
        return 4**self.J if self.kind == "2d" else 2**self.J

    @property
    def block(self) -> int:
        """Input side length (2-D) or length (1-D) must be a multiple of this."""
        return 2**self.J

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CodecConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown codec config keys: {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def from_reference(cls, d: dict[str, Any], kind: Literal["2d", "1d"]) -> CodecConfig:
        """Map a walloc JSON config (RGB_16x.json and the like) to ours."""
        missing = [k for k in REFERENCE_KEYS if k not in d]
        if missing:
            raise ValueError(f"reference config lacks {missing}")
        return cls(
            kind=kind,
            channels=int(d["channels"]),
            J=int(d["J"]),
            latent_dim=int(d["latent_dim"]),
            latent_bits=int(d["latent_bits"]),
            lightweight_encode=bool(d["lightweight_encode"]),
            Ne=d.get("Ne"),
            Nd=int(d["Nd"]),
            post_filter=bool(d.get("post_filter", False)),
        )
