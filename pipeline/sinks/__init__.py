"""Output sinks behind one interface (open shard, write sample, commit); see base.py."""

from . import webdataset, zarr  # noqa: F401  (registers)
from .base import EncodedSample, ShardStats, ShardWriter, Sink, SinkSpec

__all__ = ["EncodedSample", "ShardStats", "ShardWriter", "Sink", "SinkSpec"]
