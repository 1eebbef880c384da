"""What the stages hand each other: one typed object per hop, no dicts whose keys change per stage.

    ShardTask (plan.py) --decode--> DecodedShard --encode--> EncodedShard --commit--> ShardResult

A shard is the unit of work, commit and resume: every object here covers one whole shard, and every
input of the shard is in exactly one of its samples or error rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..sinks import EncodedSample
from ..sources import SourceItem
from .plan import ShardTask

MAX_REASON = 2000  # characters of an error reason kept in the error table


@dataclass(frozen=True)
class ErrorRow:
    """One input that is not in the output, and why (a row of errors.parquet)."""

    key: str
    source: str
    shard: int
    stage: str
    reason: str

    @classmethod
    def of(cls, item: SourceItem, shard: int, stage: str, reason: str) -> ErrorRow:
        return cls(key=item.key, source=item.uri, shard=shard, stage=stage, reason=reason[:MAX_REASON])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DecodedSample:
    """One input decoded on the host (or, with --decode gpu, on the encoder's device)."""

    key: str
    label: int | None
    slot: int  # position within the shard's items
    array: Any  # uint8 pixels (C, H, W) / float32 raster or waveform; a device tensor with --decode gpu
    meta: dict[str, Any]


@dataclass(frozen=True)
class RawSample:
    """--decode gpu: an input's bytes, read by the decode stage for the encoder to decode in batches."""

    item: SourceItem
    slot: int
    data: bytes


@dataclass
class DecodedShard:
    task: ShardTask
    samples: list[DecodedSample] = field(default_factory=list)
    raw: list[RawSample] = field(default_factory=list)  # --decode gpu only
    errors: list[ErrorRow] = field(default_factory=list)


@dataclass
class EncodedShard:
    task: ShardTask
    samples: list[EncodedSample]  # in slot order
    errors: list[ErrorRow]
    input_bytes: int  # raw size of the codec inputs (uint8 values)
    statistics: dict[str, Any]  # per-channel latent histograms (pipeline.statistics)
    decode_counts: dict[str, int] = field(default_factory=dict)  # --decode gpu: device / fallback counts


@dataclass(frozen=True)
class ShardResult:
    """What the driver learns about a shard: committed (with sizes) or failed (with the last error)."""

    shard: int
    inputs: int  # the shard's planned inputs (written + error rows when committed)
    written: int = 0
    bytes: int = 0
    input_bytes: int = 0
    failed: str | None = None
    node: str | None = None  # the Ray node that ran it (None in-process)
