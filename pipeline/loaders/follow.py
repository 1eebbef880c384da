"""Reading a run while it is written (C5): which shards have committed, and when the run is over.

A shard exists once its marker `_shards/shard-NNNNNN.json` exists (written after the shard's files
are renamed into place), so a follower reads markers, never half-written shards. The run is over
when `_run.json` says `"complete": true` (older writers: when `manifest.json` exists and counts as
many append runs as `_run.json`); then every shard the manifest lists has a marker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from ..manifest import MANIFEST, MARKERS, RUN_STATE, OutputRoot


def wait_for_run(root: OutputRoot, poll: float = 0.5, timeout: float | None = None) -> dict[str, Any]:
    """`_run.json` of the run, waiting for it to appear (a run that has not started yet)."""
    started = time.monotonic()
    while True:
        try:
            if root.exists(RUN_STATE):
                return root.read_json(RUN_STATE)
        except (FileNotFoundError, ValueError):  # replaced between exists() and read (atomic renames)
            pass
        if timeout is not None and time.monotonic() - started > timeout:
            raise TimeoutError(f"{root.url}: no run started within {timeout} s (no {RUN_STATE})")
        time.sleep(poll)


def wait_for_store(url: str, storage_options: dict | None, poll: float = 0.2, timeout: float = 600) -> dict:
    """The attributes of a run's Zarr store, once the run has created it (right after `_run.json`)."""
    import zarr

    started = time.monotonic()
    while True:
        try:
            attrs = dict(zarr.open_group(url, mode="r", storage_options=storage_options).attrs)
            if "codec" in attrs:
                return attrs
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            pass
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{url}: the run created no Zarr store within {timeout} s")
        time.sleep(poll)


def run_complete(root: OutputRoot, state: dict[str, Any] | None = None) -> bool:
    """Whether the run at root has finished writing its manifest."""
    state = root.read_json(RUN_STATE) if state is None else state
    if "complete" in state:
        return bool(state["complete"]) and root.exists(MANIFEST)
    if not root.exists(MANIFEST):
        return False
    manifest = root.read_json(MANIFEST)
    return int(manifest["run"].get("appends", 0)) == int(state.get("appends", 0))


def committed_markers(root: OutputRoot) -> dict[int, dict[str, Any]]:
    """shard -> marker (as a dict) of every shard committed so far."""
    folder = f"{root.path}/{MARKERS}"
    if not root.fs.exists(folder):
        return {}
    out = {}
    for name in sorted(p for p in root.fs.ls(folder, detail=False) if p.endswith(".json")):
        try:
            with root.fs.open(name, "rb") as f:
                import json

                marker = json.loads(f.read())
        except (FileNotFoundError, ValueError):  # a marker being replaced (resume re-commits)
            continue
        out[int(marker["stats"]["shard"])] = marker
    return out


def marker_entry(marker: dict[str, Any]) -> dict[str, Any]:
    """A marker as the manifest's shard entry (what build_manifest makes of it)."""
    return dict(marker["stats"]) | {"errors": len(marker["errors"]), "slot_offset": marker["slot_offset"]}


def follow_shards(
    root: OutputRoot, mine: Callable[[int], bool], poll: float = 0.5, timeout: float | None = None
) -> Iterator[dict[str, Any]]:
    """Manifest-style shard entries of the shards `mine` selects, in commit order, each once, until
    the run is complete and every shard its manifest lists was yielded."""
    seen: set[int] = set()
    last_progress = time.monotonic()
    while True:
        state = wait_for_run(root, poll)
        complete = run_complete(root, state)  # decided before listing: markers precede the manifest
        fresh = {s: m for s, m in committed_markers(root).items() if s not in seen and mine(s)}
        for shard in sorted(fresh):
            seen.add(shard)
            last_progress = time.monotonic()
            yield marker_entry(fresh[shard])
        if complete:
            manifest = root.read_json(MANIFEST)
            left = [s for s in manifest["shards"] if s["shard"] not in seen and mine(s["shard"])]
            for entry in left:  # listed but no marker seen (cannot happen with the marker protocol)
                seen.add(entry["shard"])
                yield entry
            return
        if timeout is not None and time.monotonic() - last_progress > timeout:
            raise TimeoutError(f"{root.url}: no shard committed for {timeout} s and the run is not complete")
        time.sleep(poll)
