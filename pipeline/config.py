"""Configuration of an encode run: nested frozen dataclasses, one per layer that reads them.

    EncodeConfig
      input, source, source_options, limit, codec, mode, progress   what to read, with which codec
      sink:   SinkSpec (pipeline/sinks/base.py)   output, format, latent format, shard size, flips
      image:  ImageSettings                       size, crop, buckets (image and raster inputs)
      audio:  AudioSettings                       window, hop, sample rate, channel policy
      raster: RasterSettings                      value range
      ray:    RayConfig                           cluster, workers, GPUs, batches, decode device

Each part validates itself in __post_init__ (names against the registries) and round-trips through
to_dict / from_dict. The jobs' flags take their defaults from here (pipeline/cli.py); sources and
preprocessors get only their own part (the factory in pipeline/preprocess/factory.py picks it). What
the manifest records is not this config but what it resolves to (codec hash, preprocessing, sink
settings: pipeline/runtime/driver.py), so this layout can change without touching any output.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from .sinks.base import SinkSpec

DEFAULT_IMAGE_CODEC = (
    "rgb-16x-klt"  # measures better on held-out photos than the CPU-trained rgb-16x (docs/training.md)
)
DEFAULT_AUDIO_CODEC = "stereo-44k-klt"  # beats the CPU-trained stereo-44k on held-out music
# the bundled 16x image codec for each input channel count (grey inputs: 1 x 256 x 256 -> 4 x 32 x 32)
IMAGE_CODEC_BY_CHANNELS = {3: DEFAULT_IMAGE_CODEC, 1: "grey-16x-klt"}

MODES = ("overwrite", "resume", "append")  # --mode (pipeline/runtime/plan.py says what each does)
CROPS = ("center", "none")  # --crop
CHANNEL_POLICIES = ("refuse", "downmix")  # --channel-policy: audio with more channels than the codec
DECODE_DEVICES = ("cpu", "gpu")  # --decode: where JPEGs are decoded and resized


def image_codec_for(channels: int) -> str:
    """The bundled image codec that fits inputs of this many channels (grey photos, document
    pages: 1; RGB: 3), so a job on grey data does not spend latents on three copies of one channel."""
    if channels not in IMAGE_CODEC_BY_CHANNELS:
        raise ValueError(
            f"no bundled image codec for {channels} channels (have {sorted(IMAGE_CODEC_BY_CHANNELS)}): "
            "train one with jobs/train_codec.py --kind 2d --channels N"
        )
    return IMAGE_CODEC_BY_CHANNELS[channels]


SAMPLES_DIR = Path(__file__).parent / "samples"
DEFAULT_IMAGE_INPUT = str(SAMPLES_DIR / "images")
DEFAULT_AUDIO_INPUT = str(SAMPLES_DIR / "audio")


class ConfigurationError(RuntimeError):
    """The run cannot start as asked: its flags do not fit this machine or cluster (e.g. --decode gpu
    without a GPU). Jobs print it as one line and exit 2; nothing has been written."""


# Refusals read like the jobs' flag errors (pipeline/cli.py): "--flag: got X; accepted: ...".
def _one_of(flag: str, value: Any, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise ValueError(f"{flag}: got {value!r}; accepted: {', '.join(accepted)}")


def _number(flag: str, value: Any, low: float, *, whole: bool = True, optional: bool = False) -> None:
    """value is a (whole) number >= low, or None where optional."""
    if optional and value is None:
        return
    kinds = int if whole else int | float
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) or value < low:
        what = f"a whole number >= {low:g}" if whole else f"a number >= {low:g}"
        raise ValueError(f"{flag}: got {value!r}; accepted: {what}" + (" or none" if optional else ""))


def _from_dict(cls: type, d: dict[str, Any], what: str) -> Any:
    """cls(**d), refusing keys it does not have (a typo is an error, not a silent default)."""
    if not isinstance(d, dict):
        raise ValueError(f"{what}: expected a mapping, got {type(d).__name__}")
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} keys: {sorted(unknown)}")
    return cls(**d)


@dataclass(frozen=True)
class ImageSettings:
    """What the run asks of image (and raster) inputs. The codec adds its channels and 2^J when the
    preprocessor is built (preprocess.image.ImagePolicy, the resolved policy the manifest records)."""

    size: int | None = 256  # target side (crop=center) or shorter side (crop=none); None keeps the size
    crop: Literal["center", "none"] = "center"
    # aspect buckets "256x256,320x192" or "area=65536:ratios=1:1,4:3" (docs/buckets.md); None: size/crop
    buckets: str | None = None

    def __post_init__(self) -> None:
        _number("--size", self.size, 1, optional=True)
        _one_of("--crop", self.crop, CROPS)
        if self.buckets is not None:
            if self.crop != "center":
                raise ValueError(
                    "--buckets: not with --crop none (each bucket is resized and center-cropped)"
                )
            from .preprocess.image import parse_buckets  # the syntax; the codec's 2^J is checked later

            parse_buckets(self.buckets, 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageSettings:
        return _from_dict(cls, d, "image")


@dataclass(frozen=True)
class AudioSettings:
    """How audio inputs are cut (the sources list windows with it, the preprocessor cuts them)."""

    window: int = 2**17  # samples per segment (at the codec's rate)
    hop: int | None = None  # segment hop; None = window (no overlap)
    sample_rate: int = 44100
    channel_policy: Literal["refuse", "downmix"] = "refuse"  # > 2 channels into a stereo codec

    def __post_init__(self) -> None:
        _number("--window", self.window, 1)
        _number("--hop", self.hop, 1, optional=True)
        _number("--sample-rate", self.sample_rate, 1)
        _one_of("--channel-policy", self.channel_policy, CHANNEL_POLICIES)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AudioSettings:
        return _from_dict(cls, d, "audio")


@dataclass(frozen=True)
class RasterSettings:
    """How raster values are scaled (their size and crop are the image settings)."""

    value_range: tuple[float, float] | None = None  # clip to [lo, hi] then scale; None: by dtype

    def __post_init__(self) -> None:
        if self.value_range is not None:
            lo, hi = (float(v) for v in self.value_range)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"--range: got {self.value_range}; accepted: two finite numbers LO < HI")
            object.__setattr__(self, "value_range", (lo, hi))  # a JSON list reads back as a tuple

    def to_dict(self) -> dict[str, Any]:
        return {"value_range": list(self.value_range) if self.value_range is not None else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RasterSettings:
        return _from_dict(cls, d, "raster")


@dataclass(frozen=True)
class RayConfig:
    """Where and how the shard workers run: none of it changes the latents (--decode gpu does, a
    little: docs/gpu.md; the preprocessing it builds records that)."""

    address: str | None = None  # Ray cluster address; None starts a local Ray
    workers: int | None = None  # encoder actors; None = one per CPU (or per GPU with GPUs)
    num_gpus_per_worker: float = 0.0
    batch_size: int = 64  # at most this many samples per codec call
    # at most this many codec-input values (channels x pixels or samples) per codec call: a batch of
    # 256x256 RGB images holds 64 of them, of 1024x1024 ones 4; one oversized sample still goes alone
    batch_pixels: int = 64 * 3 * 256 * 256
    # gpu: JPEG bytes go to the encoder actors, decoded and resized on their GPU (docs/gpu.md)
    decode: Literal["cpu", "gpu"] = "cpu"
    decode_device: str | None = None  # tests/CI only: run the gpu decode path on this torch device ("cpu")
    sample_timeout_s: float = 60.0  # per-sample decode budget; a slower input becomes an error row

    def __post_init__(self) -> None:
        _number("--workers", self.workers, 1, optional=True)
        _number("--num-gpus-per-worker", self.num_gpus_per_worker, 0, whole=False)
        _number("--batch-size", self.batch_size, 1)
        _number("--batch-pixels", self.batch_pixels, 1)
        _one_of("--decode", self.decode, DECODE_DEVICES)
        if self.decode_device is not None and self.decode != "gpu":
            raise ValueError(f"decode_device: got {self.decode_device!r} with --decode cpu; accepted: none")
        _number("--sample-timeout", self.sample_timeout_s, 0, whole=False)
        if self.sample_timeout_s == 0:
            raise ValueError("--sample-timeout: got 0; accepted: a number > 0")

    @property
    def decode_on_gpu(self) -> bool:
        """The gpu decode path on a CUDA device (not the CPU device tests use)."""
        return self.decode == "gpu" and (self.decode_device or "cuda").startswith("cuda")

    @property
    def gpus_per_worker(self) -> float:
        """GPUs per encoder actor: --num-gpus-per-worker, or 1 when JPEGs are decoded on the GPU."""
        return self.num_gpus_per_worker or (1.0 if self.decode_on_gpu else 0.0)

    @property
    def remote(self) -> bool:
        """A cluster given by address (its nodes, not this machine, have the devices)."""
        return self.address not in (None, "local")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RayConfig:
        return _from_dict(cls, d, "ray")


@dataclass(frozen=True)
class EncodeConfig:
    """An encode run: where from, with which codec, into which sink, with which policies."""

    input: str  # folder / tar shards / HF dataset / audio folder (local path or fsspec URL)
    sink: SinkSpec  # where to and how: output root, format, latent format, shard size, flip pairs
    source: str = "auto"  # a registered source name, or auto-detect from the input
    source_options: dict[str, Any] = field(default_factory=dict)  # e.g. image/label columns for HF
    codec: str = DEFAULT_IMAGE_CODEC  # bundled name or path
    mode: Literal["overwrite", "resume", "append"] = "resume"
    limit: int | None = None  # encode only the first N inputs of the listing
    image: ImageSettings = field(default_factory=ImageSettings)
    audio: AudioSettings = field(default_factory=AudioSettings)
    raster: RasterSettings = field(default_factory=RasterSettings)
    ray: RayConfig = field(default_factory=RayConfig)
    progress: bool = True

    def __post_init__(self) -> None:
        from . import sources  # noqa: F401  (registers the sources)
        from .registry import SOURCES

        if not self.input:
            raise ValueError("--input: empty; accepted: a path or an fsspec URL")
        _one_of("--source", self.source, ("auto", *sorted(SOURCES)))
        if not self.codec:
            raise ValueError("--codec: empty; accepted: a bundled codec name or a path")
        _one_of("--mode", self.mode, MODES)
        _number("--limit", self.limit, 1, optional=True)
        parts = {"sink": SinkSpec, "image": ImageSettings, "audio": AudioSettings}
        parts |= {"raster": RasterSettings, "ray": RayConfig}
        for name, cls in parts.items():
            if not isinstance(getattr(self, name), cls):
                raise TypeError(f"EncodeConfig.{name} must be a {cls.__name__}, got {getattr(self, name)!r}")

    def policies(self) -> dict[str, Any]:
        """The settings of each input modality (what sources may take from the run)."""
        return {"image": self.image, "audio": self.audio, "raster": self.raster}

    @property
    def output(self) -> str:
        """The output root (the sink's)."""
        return self.sink.output

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "source": self.source,
            "source_options": dict(self.source_options),
            "codec": self.codec,
            "mode": self.mode,
            "limit": self.limit,
            "sink": asdict(self.sink),
            "image": self.image.to_dict(),
            "audio": self.audio.to_dict(),
            "raster": self.raster.to_dict(),
            "ray": self.ray.to_dict(),
            "progress": self.progress,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EncodeConfig:
        """The inverse of to_dict; sections left out take their defaults, unknown keys are refused."""
        d = dict(d)
        parts = {"image": ImageSettings, "audio": AudioSettings, "raster": RasterSettings, "ray": RayConfig}
        nested: dict[str, Any] = {
            name: part.from_dict(d.pop(name)) for name, part in parts.items() if name in d
        }
        if "sink" not in d:
            raise ValueError("EncodeConfig needs a sink (at least its output)")
        nested["sink"] = _from_dict(SinkSpec, d.pop("sink"), "sink")
        return _from_dict(cls, d | nested, "encode config")
