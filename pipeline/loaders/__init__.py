"""Training-side readers of pipeline outputs (WebDataset shards, Zarr stores)."""

from .batch import Batch
from .common import (
    CodecMismatchError,
    Dequantizer,
    MixedRunsError,
    RunInfo,
    ShardFile,
    check_codec,
    latent_from_sample,
)
from .order import merge_states
from .stream import ResumableLoader
from .webdataset import LatentWebDataset
from .zarr import LatentZarrDataset, LatentZarrStream

__all__ = [
    "Batch",
    "CodecMismatchError",
    "Dequantizer",
    "LatentWebDataset",
    "LatentZarrDataset",
    "LatentZarrStream",
    "MixedRunsError",
    "ResumableLoader",
    "RunInfo",
    "ShardFile",
    "check_codec",
    "latent_from_sample",
    "merge_states",
]
