"""Deterministic shard planning, and what --mode overwrite|resume|append means for an output.

Shard k holds inputs [k*S, (k+1)*S) of the sorted listing (S = --shard-size), so the same inputs
and settings always give the same shards. Resume skips shards whose commit marker exists; append
plans new shards (numbered after the existing ones) for inputs whose keys are not yet present, and
for inputs whose source fingerprint (size + mtime / ETag) differs from the one recorded when their
live entry was encoded: those are encoded again, and the manifest lists the old entry as superseded.
`_run.json` says `"complete": false` from here until the run's manifest is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..manifest import RUN_STATE, OutputRoot, RunIdentity, ShardMarker
from ..sources.base import SourceItem
from ..sources.listing import Listing, ListingSlice

Mode = Literal["overwrite", "resume", "append"]


class OutputConflictError(RuntimeError):
    """The output holds a different run; the message says which --mode to use."""


@dataclass(frozen=True)
class ShardTask:
    shard: int
    slot_offset: int  # first row of this shard in slot space (Zarr row index)
    # the shard's inputs: a ListingSlice on the driver (rows of the listing, O(1) memory), the
    # SourceItems themselves once sent to a worker
    items: Sequence[SourceItem]
    # append runs: statistics (pipeline.statistics) of the live samples this shard supersedes, stored
    # in its marker so that the run's statistics drop them exactly when (and only if) it commits
    superseded_statistics: dict | None = field(default=None, compare=False)


@dataclass
class Plan:
    todo: list[ShardTask]  # shards to encode now
    done: list[ShardMarker]  # shards already committed (kept)
    total_slots: int  # rows a Zarr store needs
    inputs: int  # items covered by done + todo
    appends: int  # how many append runs built this output
    changed: list[str] = field(default_factory=list)  # keys re-encoded because their source changed
    replaced: dict[str, ShardMarker] = field(default_factory=dict)  # changed key -> marker of its sample


def chunk(
    items: Listing | Sequence[SourceItem],
    shard_size: int,
    first_shard: int,
    first_slot: int,
    rows: np.ndarray | None = None,
) -> list[ShardTask]:
    """Shards of `shard_size` consecutive inputs (of the listing, or of its `rows` when given)."""
    n = len(items) if rows is None else len(rows)

    def part(s: int) -> Sequence[SourceItem]:
        e = min(s + shard_size, n)
        if not isinstance(items, Listing):
            return tuple(items[s:e])
        return ListingSlice(items, s, e) if rows is None else ListingSlice(items, indices=rows[s:e])

    return [
        ShardTask(shard=first_shard + i, slot_offset=first_slot + i * shard_size, items=part(s))
        for i, s in enumerate(range(0, n, shard_size))
    ]


def plan_run(
    root: OutputRoot,
    items: Listing,
    identity: RunIdentity,
    shard_size: int,
    mode: Mode,
    *,
    write: bool = True,
) -> Plan:
    """Decide which shards to (re)encode, and prepare the output root for the run.

    write=False (the dry run) decides the same plan and raises the same conflicts, but leaves the
    output untouched."""
    if mode == "overwrite" or root.is_empty():
        if write:
            root.clear()
            root.write_json(RUN_STATE, identity.to_dict() | {"appends": 0, "complete": False})
        tasks = chunk(items, shard_size, 0, 0)
        return Plan(todo=tasks, done=[], total_slots=len(items), inputs=len(items), appends=0)

    if not root.exists(RUN_STATE):
        raise OutputConflictError(
            f"{root.url} is not empty and holds no pipeline run; choose an empty output or --mode overwrite"
        )
    state = root.read_json(RUN_STATE)
    if state["settings_hash"] != identity.settings_hash:
        raise OutputConflictError(
            f"{root.url} was encoded with different settings "
            f"({_diff(state['settings'], identity.settings)}); use another output, or --mode overwrite"
        )
    done = root.markers()
    appends = int(state.get("appends", 0))

    if mode == "resume":
        if state["listing_hash"] != identity.listing_hash:
            raise OutputConflictError(
                f"the inputs changed since {root.url} was started; use --mode append to encode only the "
                "new inputs, or --mode overwrite to start again"
            )
        # the first run's plan (appends add their own shards after it; resume only applies to run 0)
        if appends:
            raise OutputConflictError(f"{root.url} has been appended to; use --mode append")
        committed = {m.stats["shard"] for m in done}
        if write:
            root.write_json(RUN_STATE, state | {"complete": False})
        tasks = [t for t in chunk(items, shard_size, 0, 0) if t.shard not in committed]
        return Plan(todo=tasks, done=done, total_slots=len(items), inputs=len(items), appends=0)

    # append: inputs not present yet (written or in the error table) go into new shards
    relabelled = sorted(c for c, i in state.get("label_map", {}).items() if identity.label_map.get(c) != i)
    if relabelled:
        raise OutputConflictError(
            f"appending would change the labels of classes already in {root.url} "
            f"({', '.join(relabelled[:5])}{', ...' if len(relabelled) > 5 else ''}): labels index the "
            "sorted class names, and the new inputs' classes renumber them; use --mode overwrite"
        )
    live = _live_entries(done)  # every key present (written or in the error table)
    recorded = {key: marker.fingerprints.get(key) for key, (marker, _) in live.items()}
    keys, fingerprints = items.keys_and_fingerprints()
    changed, new_rows = [], []
    for row, (key, fp) in enumerate(zip(keys, fingerprints, strict=True)):
        if key not in recorded:
            new_rows.append(row)
        elif None not in (fp, recorded[key]) and fp != recorded[key]:
            changed.append(key)
            new_rows.append(row)
    new = np.asarray(new_rows, dtype=np.int64)
    next_shard = max((m.stats["shard"] for m in done), default=-1) + 1
    used = max((m.slot_offset + shard_size for m in done), default=0)
    first_slot = -(-used // shard_size) * shard_size  # Zarr shards stay aligned to --shard-size
    tasks = chunk(items, shard_size, next_shard, first_slot, rows=new)
    appends += 1 if tasks else 0
    if write:
        root.write_json(RUN_STATE, identity.to_dict() | {"appends": appends, "complete": False})
    total_slots = first_slot + len(new) if tasks else used
    inputs = len(recorded) + len(new) - len(changed)  # a re-encoded key is one input, not two
    replaced = {key: live[key][0] for key in changed if live[key][1]}
    return Plan(
        todo=tasks,
        done=done,
        total_slots=total_slots,
        inputs=inputs,
        appends=appends,
        changed=changed,
        replaced=replaced,
    )


def _live_entries(done: list[ShardMarker]) -> dict[str, tuple[ShardMarker, bool]]:
    """key -> (marker of its live entry: the highest shard holding the key, whether it is a sample)."""
    out: dict[str, tuple[ShardMarker, bool]] = {}
    for m in sorted(done, key=lambda m: m.stats["shard"]):
        out |= {key: (m, True) for key in m.keys} | {e["key"]: (m, False) for e in m.errors}
    return out


def _diff(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return "differs in " + ", ".join(keys) if keys else "same keys, different values"
