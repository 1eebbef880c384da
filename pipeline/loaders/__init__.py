"""Training-side readers of pipeline outputs (WebDataset shards, Zarr stores)."""

from .common import CodecMismatchError, Dequantizer, RunInfo, check_codec, latent_from_sample
from .webdataset import LatentWebDataset
from .zarr import LatentZarrDataset

__all__ = [
    "CodecMismatchError",
    "Dequantizer",
    "LatentWebDataset",
    "LatentZarrDataset",
    "RunInfo",
    "check_codec",
    "latent_from_sample",
]
