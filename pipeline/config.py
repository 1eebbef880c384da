"""Configuration of an encode run: one frozen dataclass, built by the jobs' argument parsers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from .formats import output_format

DEFAULT_IMAGE_CODEC = (
    "rgb-16x-klt"  # measures better on held-out photos than the CPU-trained rgb-16x (docs/training.md)
)
DEFAULT_AUDIO_CODEC = "stereo-44k-klt"  # beats the CPU-trained stereo-44k on held-out music
# the bundled 16x image codec for each input channel count (grey inputs: 1 x 256 x 256 -> 4 x 32 x 32)
IMAGE_CODEC_BY_CHANNELS = {3: DEFAULT_IMAGE_CODEC, 1: "grey-16x-klt"}


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
    # aspect buckets "256x256,320x192" or "area=65536:ratios=1:1,4:3" (docs/buckets.md); None: size/crop
    buckets: str | None = None
    flip_pair: bool = False  # also store the latent of the horizontally mirrored input (docs/flips.md)
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
    batch_size: int = 64  # at most this many samples per codec call
    # at most this many codec-input values (channels x pixels or samples) per codec call: a batch of
    # 256x256 RGB images holds 64 of them, of 1024x1024 ones 4; one oversized sample still goes alone
    batch_pixels: int = 64 * 3 * 256 * 256
    # gpu: JPEG bytes go to the encoder actors, decoded and resized on their GPU (docs/gpu.md)
    decode: Literal["cpu", "gpu"] = "cpu"
    decode_device: str | None = None  # tests/CI only: run the gpu decode path on this torch device ("cpu")
    sample_timeout_s: float = 60.0  # per-sample decode budget; a slower input becomes an error row
    storage_options: dict[str, Any] = field(default_factory=dict)  # fsspec options for the output
    progress: bool = True

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise ValueError("--shard-size must be >= 1")
        if self.batch_size < 1:
            raise ValueError("--batch-size must be >= 1")
        if self.batch_pixels < 1:
            raise ValueError("--batch-pixels must be >= 1")
        output_format(self.format).check_latent_format(self.format, self.latent_format)
        if self.buckets is not None and self.crop != "center":
            raise ValueError("--buckets resizes and center-crops to each bucket: not with --crop none")
        if self.decode not in ("cpu", "gpu"):
            raise ValueError(f"--decode must be cpu or gpu, got {self.decode!r}")
        if self.decode_device is not None and self.decode != "gpu":
            raise ValueError("decode_device applies to decode='gpu' only")

    @property
    def decode_on_gpu(self) -> bool:
        """The gpu decode path on a CUDA device (not the CPU device tests use)."""
        return self.decode == "gpu" and (self.decode_device or "cuda").startswith("cuda")

    @property
    def gpus_per_worker(self) -> float:
        """GPUs per encoder actor: --num-gpus-per-worker, or 1 when JPEGs are decoded on the GPU."""
        return self.num_gpus_per_worker or (1.0 if self.decode_on_gpu else 0.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
