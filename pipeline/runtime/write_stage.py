"""Stage 3: write an encoded shard through the sink, commit it, then its marker (the shard's commit).

An attempt is the whole shard then its marker; attempts are idempotent (same bytes under the same
names), so a retry after a failure at any point, or a rerun by Ray after its worker died, leaves
exactly what one clean attempt leaves. A shard that keeps failing is reported, not raised.
"""

from __future__ import annotations

import time

from ..manifest import OutputRoot, ShardMarker
from ..registry import SINKS, lookup
from ..sinks import SinkSpec
from .faults import kill_switch
from .work import EncodedShard, ShardResult

WRITE_ATTEMPTS = 3  # bounded retries of a shard write before the shard is reported as failed


class ShardCommitter:
    """EncodedShard -> ShardResult: the shard's files, then its marker under `_shards/`."""

    def __init__(self, spec: SinkSpec, settings_hash: str):
        self.sink = lookup(SINKS, spec.format, "sink")(spec)
        self.root = OutputRoot(spec.output, spec.storage_options)
        self.settings_hash = settings_hash

    def __call__(self, shard: EncodedShard) -> ShardResult:
        task = shard.task
        errors = sorted((e.to_dict() for e in shard.errors), key=lambda e: e["key"])
        last_error = None
        for attempt in range(WRITE_ATTEMPTS):
            writer = self.sink.open_shard(task.shard, task.slot_offset)
            try:
                for sample in shard.samples:
                    writer.write(sample)
                stats = writer.commit()
                if stats.samples + len(errors) != len(task.items):
                    raise AssertionError(
                        f"shard {task.shard}: {stats.samples} + {len(errors)} != {len(task.items)} inputs"
                    )
                kill_switch("write", task.shard)
                marker = ShardMarker(
                    stats=stats.to_dict() | shard.decode_counts,
                    slot_offset=task.slot_offset,
                    keys=stats.keys,
                    errors=errors,
                    settings_hash=self.settings_hash,
                    statistics=shard.statistics,
                    fingerprints={it.key: it.fingerprint for it in task.items if it.fingerprint is not None},
                    superseded_statistics=task.superseded_statistics,
                )
                self.root.write_marker(marker)
                return ShardResult(
                    shard=task.shard,
                    inputs=len(task.items),
                    written=stats.samples,
                    bytes=stats.bytes,
                    input_bytes=shard.input_bytes,
                )
            except Exception as err:  # noqa: BLE001 - retried, then reported
                writer.abort()
                last_error = f"{type(err).__name__}: {err}"
                if attempt + 1 < WRITE_ATTEMPTS:
                    time.sleep(0.2 * (attempt + 1))
        return ShardResult(shard=task.shard, inputs=len(task.items), failed=last_error)
