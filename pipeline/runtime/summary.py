"""What a run reports when it ends: counts, sizes, speed, and which shards failed (and why)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class RunSummary:
    inputs: int
    written: int
    errors: int
    failed_shards: list[int]
    shards_encoded: int
    shards_skipped: int
    seconds: float
    bytes_written: int
    input_bytes: int  # raw uint8 size of the codec inputs encoded in this run
    output: str
    written_this_run: int
    failures: dict[int, str] = field(default_factory=dict)  # failed shard -> last error
    encode_seconds: float = 0.0  # from a started Ray to the last shard (excludes Ray start-up)
    changed: int = 0  # append: inputs re-encoded because their source changed (old entries superseded)
    decode: dict[str, int] | None = None  # --decode gpu: decoded_on_device / decode_fallbacks (all shards)
    first_commit_seconds: float | None = None  # from the run's start to its first committed shard
    shards_per_node: dict[str, int] = field(default_factory=dict)  # Ray node id -> shards it committed
    skipped: dict[str, int] = field(default_factory=dict)  # files under the input not listed, by reason

    @property
    def samples_per_s(self) -> float:
        return self.written_this_run / self.encode_seconds if self.encode_seconds > 0 else 0.0

    def format(self) -> str:
        ratio = self.input_bytes / self.bytes_written if self.bytes_written else float("nan")
        lines = [
            f"output           {self.output}",
            f"inputs           {self.inputs}  (written {self.written} + errors {self.errors})",
        ]
        if self.skipped:
            reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
            lines.append(
                f"skipped files    {sum(self.skipped.values())} not listed ({reasons}; manifest `source`)"
            )
        lines += [
            f"shards           {self.shards_encoded} encoded, {self.shards_skipped} already committed"
            + (f", FAILED: {self.failed_shards}" if self.failed_shards else ""),
            f"this run         {self.written_this_run} samples in {self.encode_seconds:.1f} s of encoding "
            f"= {self.samples_per_s:.1f} samples/s ({self.seconds:.1f} s with listing and Ray start-up)",
            f"bytes written    {self.bytes_written:,} (inputs {self.input_bytes:,} raw: ratio {ratio:.1f}x)",
        ]
        if len(self.shards_per_node) > 1:
            lines.append(
                f"nodes            {len(self.shards_per_node)} ran shards "
                f"({', '.join(str(n) for n in sorted(self.shards_per_node.values()))})"
            )
        if self.decode is not None:
            lines.append(
                f"decode           {self.decode['decoded_on_device']} on the device, "
                f"{self.decode['decode_fallbacks']} fell back to the CPU path (meta: decode_fallback)"
            )
        if self.changed:
            lines.append(f"changed sources  {self.changed} re-encoded (old entries: manifest `superseded`)")
        lines += [f"shard {shard} FAILED  {reason}" for shard, reason in sorted(self.failures.items())]
        if self.failed_shards:
            lines.append("failed shards have no marker: the same command again (--mode resume) retries them")
        return "\n".join(lines)


def count_nodes(nodes: list[str | None]) -> dict[str, int]:
    return dict(Counter(n for n in nodes if n is not None))
