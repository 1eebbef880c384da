"""Append runs: the statistics of the samples a re-encode supersedes, so the run's stay exact.

Shards are immutable, so a sample replaced by a re-encode (its source changed) stays in its old
shard; the manifest lists it as superseded and its latent must leave the run's statistics. The driver
reads those few latents back from the old shards (through the sink, which knows its format) before
encoding, and each new shard carries the histogram of the samples it replaces into its marker: the
manifest subtracts it exactly, and only once that shard has committed (a crash before leaves both the
old sample live and its statistics counted).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..manifest import ShardMarker
from ..statistics import HistogramAccumulator
from .plan import ShardTask


def attach_superseded_statistics(
    tasks: list[ShardTask], replaced: dict[str, ShardMarker], sink, codec
) -> list[ShardTask]:
    """The tasks, each with the histograms of the live samples its items replace (if any)."""
    if not replaced:
        return tasks
    out = []
    for task in tasks:
        acc = HistogramAccumulator(codec.config.latent_bits)
        for item in task.items:
            marker = replaced.get(item.key)
            if marker is None:
                continue
            try:
                z = sink.read_latent(marker.stats, marker.slot_offset, item.key)
            except Exception as err:
                raise RuntimeError(
                    f"cannot read the latent of {item.key!r} from shard {marker.stats['shard']}, which "
                    f"this append supersedes (is the output damaged?): {type(err).__name__}: {err}"
                ) from err
            if isinstance(z, bytes):  # entropy-coded (.wlat)
                z = codec.from_bytes(z).numpy()
            z = np.asarray(z)
            acc.add(z, stacked=z.ndim > (2 if codec.config.kind == "1d" else 3))  # grouped stems: (S, ...)
        out.append(dataclasses.replace(task, superseded_statistics=acc.to_dict()) if acc.samples else task)
    return out
