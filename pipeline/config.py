"""Configuration of an encode run: one frozen dataclass, built by the jobs' argument parsers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

DEFAULT_IMAGE_CODEC = (
    "rgb-16x-klt"  # measures better on held-out photos than the CPU-trained rgb-16x (docs/training.md)
)
DEFAULT_AUDIO_CODEC = "stereo-44k-klt"  # beats the CPU-trained stereo-44k on held-out music
SAMPLES_DIR = Path(__file__).parent / "samples"
DEFAULT_IMAGE_INPUT = str(SAMPLES_DIR / "images")
DEFAULT_AUDIO_INPUT = str(SAMPLES_DIR / "audio")


@dataclass(frozen=True)
class EncodeConfig:
    """An encode run: where from, where to, with which codec, how it is cut into shards."""

    input: str  # folder / tar shards / HF dataset / audio folder (local path or fsspec URL)
    output: str  # output root (local path or fsspec URL, e.g. s3://bucket/prefix)
    source: str = "auto"  # a registered source name, or auto-detect from the input
    source_options: dict[str, Any] = field(default_factory=dict)  # e.g. image/label columns for HF
    format: Literal["webdataset", "zarr"] = "webdataset"
    codec: str = DEFAULT_IMAGE_CODEC  # bundled name or path
    latent_format: str = "npy"  # npy (int8 .npy per sample) or an entropy coding method: zstd, png, webp
    shard_size: int = 256  # samples per shard (the unit of work, commit and resume)
    mode: Literal["overwrite", "resume", "append"] = "resume"
    limit: int | None = None  # encode only the first N inputs of the listing
    # images
    size: int | None = 256  # target side; None keeps the original size (crop=none)
    crop: Literal["center", "none"] = "center"
    # rasters (and images' size/crop above)
    value_range: tuple[float, float] | None = None  # clip to [lo, hi] then scale; None: by dtype
    # audio
    window: int = 2**17  # samples per segment (at the codec's rate)
    hop: int | None = None  # segment hop; None = window (no overlap)
    sample_rate: int = 44100
    channel_policy: Literal["refuse", "downmix"] = "refuse"  # > 2 channels into a stereo codec
    # Ray
    address: str | None = None  # Ray cluster address; None starts a local Ray
    workers: int | None = None  # encoder actors; None = one per CPU (or per GPU with GPUs)
    num_gpus_per_worker: float = 0.0
    batch_size: int = 64  # samples per codec call
    sample_timeout_s: float = 60.0  # per-sample decode budget; a slower input becomes an error row
    storage_options: dict[str, Any] = field(default_factory=dict)  # fsspec options for the output
    progress: bool = True

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise ValueError("--shard-size must be >= 1")
        if self.batch_size < 1:
            raise ValueError("--batch-size must be >= 1")
        if self.format == "zarr" and self.latent_format != "npy":
            raise ValueError(
                "zarr stores int8 latents (its own zstd codec compresses them): use --latent-format npy"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
