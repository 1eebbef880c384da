"""The preprocessing of a run: one small interface every preprocessor has, and the one factory.

The runtime only ever sees a `Preprocessor`: it never asks which class it holds. Which class that is
follows from the source's modality and the run's decode setting, decided here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..config import AudioSettings, ImageSettings, RasterSettings, RayConfig
from .image import Decoded, ImagePolicy, ImagePreprocessor, parse_buckets
from .raster import RasterPreprocessor


@runtime_checkable
class Preprocessor(Protocol):
    """bytes -> Decoded (pixels or waveform + metadata) -> codec input; what the run records."""

    modality: str
    # True: the encoder decodes the bytes on its device in batches (decode_batch); the decode stage
    # only reads them. False: the decode stage decodes each input on the CPU (decode).
    device_decode: bool

    def decode(self, data: bytes, item: Any = None) -> Decoded: ...

    def codec_input(self, array: Any) -> Any: ...

    def input_size(self, array: Any) -> tuple[int, ...]: ...

    def fixed_shape(self) -> tuple[int, ...] | None: ...

    def bucket_shapes(self) -> dict[str, tuple[int, ...]] | None: ...

    def to_dict(self) -> dict[str, Any]: ...


def signal_ndim(codec: Any) -> int:
    """Dims of one codec input without the batch: (C, L) or (C, H, W). A preprocessor's arrays may
    have more, leading: grouped signals of one sample (MUSDB stems, (S, C, L)), encoded as a batch."""
    return 2 if codec.config.kind == "1d" else 3


def latent_shape_of(codec: Any, shape: tuple[int, ...]) -> list[int]:
    """Latent shape of one preprocessed array; leading group axes (grouped stems) are kept."""
    n = signal_ndim(codec)
    return [*shape[:-n], *codec.latent_shape(tuple(shape[-n:]))]


def make_preprocessor(
    modality: str,
    codec: Any,
    *,
    image: ImageSettings | None = None,
    audio: AudioSettings | None = None,
    raster: RasterSettings | None = None,
    decode: DeviceDecode | None = None,
    stems: tuple[str, ...] | None = None,
) -> Preprocessor:
    """The preprocessing for a source's modality, parameterised by the codec (channels, 2^J).

    Each preprocessor gets only its own settings (image: `image`; rasters: `image` for the geometry,
    `raster` for the values; audio: `audio`; left out: the defaults). decode: --decode gpu (images
    only). stems: the signals each item holds together (Source.grouped_stems(): MUSDB mixture +
    stems); audio only, decoded to (S, C, window)."""
    image, audio, raster = image or ImageSettings(), audio or AudioSettings(), raster or RasterSettings()
    if stems and modality != "audio":
        raise ValueError(f"grouped stems are audio; these inputs are {modality}")
    if image.buckets and modality != "image":
        raise ValueError(f"--buckets is for images; these inputs are {modality}")
    if decode is not None and modality != "image":
        raise ValueError(f"--decode gpu decodes JPEG images; {modality} inputs decode on CPUs (--decode cpu)")
    c = codec.config
    if modality == "image":
        policy = ImagePolicy(
            size=image.size,
            crop=image.crop,
            channels=c.channels,
            multiple=c.block,
            buckets=parse_buckets(image.buckets, c.block) if image.buckets else None,
        )
        return _device_preprocessor(decode, policy) if decode is not None else ImagePreprocessor(policy)
    if modality == "raster":
        return RasterPreprocessor.from_settings(image, raster, codec)
    if modality == "audio":
        from .audio import AudioPreprocessor  # the audio stack is optional at import time

        return AudioPreprocessor.from_settings(audio, codec).with_stems(stems)
    raise ValueError(f"no preprocessing for {modality!r} inputs")


@dataclass(frozen=True)
class DeviceDecode:
    """--decode gpu: decode JPEGs in the encoder actors, on `device` (tests: "cpu"); `remote`: the
    actors run on a cluster's nodes, so this machine's devices say nothing about theirs."""

    device: str = "cuda"
    remote: bool = False

    @classmethod
    def from_ray(cls, ray: RayConfig) -> DeviceDecode | None:
        """The run's --decode / decode_device / --address; None for --decode cpu."""
        if ray.decode != "gpu":
            return None
        return cls(device=ray.decode_device or "cuda", remote=ray.decode_device is None and ray.remote)


def _device_preprocessor(decode: DeviceDecode, policy: ImagePolicy) -> Preprocessor:
    """--decode gpu: the image preprocessor that decodes in the encoder actors, on their device.

    Fails at once without a GPU: on the driver for a local Ray (torch.cuda.is_available()), from
    the cluster's resources in worker_plan otherwise (a head node may have no GPU of its own)."""
    from .image_device import DeviceDecodeSpec, DeviceImagePreprocessor

    if policy.channels != 3:
        raise ValueError("--decode gpu decodes to RGB: it needs a 3-channel codec (use --decode cpu)")
    if decode.remote:
        spec = DeviceDecodeSpec(device=decode.device, backend="torchvision-nvjpeg")
    else:
        spec = DeviceDecodeSpec.for_device(decode.device)
    return DeviceImagePreprocessor(policy, spec=spec)
