"""Run identity, per-shard commit markers, the manifest and the error table.

Commit protocol (what makes runs resumable and readers safe):
  1. `_run.json` records the settings hash and listing hash when a run starts;
  2. each shard is written under a temporary name and renamed (the sink's job);
  3. then `_shards/shard-NNNNNN.json` is written (atomically): the shard's stats, keys and errors.
     A shard is committed if and only if its marker exists;
  4. after the last shard, `errors.parquet` and then `manifest.json` are written from the markers.
The manifest holds no timestamps, so identical runs give identical bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__
from .schemas import arrow_schema, validate
from .sinks.base import atomic_write
from .statistics import merge_statistics

MANIFEST = "manifest.json"
ERRORS = "errors.parquet"
RUN_STATE = "_run.json"
MARKERS = "_shards"
LISTING = (
    "_listing.parquet"  # the run's listing (sources/listing.py): resume reads it instead of listing again
)
LISTING_ROW_GROUP = 65536  # rows per row group of the stored listing (shards in order read each once)
LEASE = "_lease.json"  # the live run's lease (pipeline/runtime/lease.py): one writer per output
LEASE_LOCK = "_lease.lock"  # local filesystems: serialises lease takeover between processes
LEASE_PREFIX = "_lease."  # lease, lock, lease temp files: they belong to the run doing the clearing
FORMAT = "walloc-pipeline-manifest/1"
STAGES = ("read", "decode", "encode", "write", "timeout")  # the closed set of failure stages


def stable_hash(obj: Any) -> str:
    """sha256 of canonical JSON: identifies settings independent of key order."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class RunIdentity:
    """What an output was made with. Resume requires both hashes to match; append only the settings,
    and that the classes already encoded keep their labels."""

    settings: dict[str, Any]  # codec hash, preprocessing, sink, shard size, latent format
    listing_hash: str  # the input listing
    label_map: dict[str, int] = field(default_factory=dict)  # class -> label of the listing

    @property
    def settings_hash(self) -> str:
        return stable_hash(self.settings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "settings_hash": self.settings_hash,
            "listing_hash": self.listing_hash,
            "label_map": self.label_map,
        }


@dataclass
class ShardMarker:
    """The committed record of one shard."""

    stats: dict[str, Any]  # ShardStats.to_dict()
    slot_offset: int
    keys: list[str]
    errors: list[dict[str, Any]] = field(default_factory=list)  # error-table rows
    settings_hash: str = ""
    # per-channel histograms of the shard's latents (pipeline.statistics); None in older markers
    statistics: dict[str, Any] | None = None
    # key -> source fingerprint (size + mtime / ETag) of every input of the shard, written or not:
    # what --mode append compares to notice changed sources (older markers: none, never "changed")
    fingerprints: dict[str, str] = field(default_factory=dict)
    # append runs: histograms of the samples this shard supersedes (taken out of the run's statistics)
    superseded_statistics: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "stats": self.stats,
            "slot_offset": self.slot_offset,
            "keys": self.keys,
            "errors": self.errors,
            "settings_hash": self.settings_hash,
        }
        if self.statistics is not None:
            out["statistics"] = self.statistics
        if self.fingerprints:
            out["fingerprints"] = self.fingerprints
        if self.superseded_statistics is not None:
            out["superseded_statistics"] = self.superseded_statistics
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardMarker:
        return cls(**d)


class OutputRoot:
    """The output folder (local or fsspec URL) and the small JSON files that describe it."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None):
        self.url = url.rstrip("/")
        # no listing cache: workers in other processes add markers and shards that a cached listing
        # of this process (s3fs, gcsfs) would not show, e.g. to markers() at the end of a resume
        options = {"use_listings_cache": False} | (storage_options or {})
        self.fs, self.path = fsspec.core.url_to_fs(self.url, **options)
        self.path = self.path.rstrip("/")

    def _p(self, name: str) -> str:
        return f"{self.path}/{name}"

    def exists(self, name: str) -> bool:
        return self.fs.exists(self._p(name))

    def read_json(self, name: str) -> Any:
        with self.fs.open(self._p(name), "rb") as f:
            return json.loads(f.read())

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write(self.fs, self._p(name), (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())

    def _contents(self) -> list[str]:
        """Paths under the root, except the lease (which says who writes, not what was written)."""
        if not self.fs.exists(self.path):
            return []
        names = self.fs.ls(self.path, detail=False)
        return [p for p in names if not p.rstrip("/").rsplit("/", 1)[-1].startswith(LEASE_PREFIX)]

    def clear(self) -> None:
        """Remove everything under the root but the lease (--mode overwrite)."""
        for p in self._contents():
            self.fs.rm(p, recursive=True)
        self.fs.makedirs(self.path, exist_ok=True)

    def is_empty(self) -> bool:
        return not self._contents()

    # --- the listing --------------------------------------------------------------------------
    def write_listing(self, listing: Any, about: dict[str, Any], row_group: int) -> None:
        """Persist the run's listing (a temporary name, then renamed: never half a listing)."""
        tmp = self._p(LISTING + ".tmp")
        with self.fs.open(tmp, "wb") as f:
            listing.write(f, row_group=row_group, about=about)
        self.fs.mv(tmp, self._p(LISTING))

    def stored_listing(self) -> tuple[Any, dict[str, Any]] | None:
        """(Listing, what it was made from) of the last run on this output, or None."""
        import pyarrow.parquet as pq

        from .sources.listing import Listing

        if not self.exists(LISTING):
            return None
        with self.fs.open(self._p(LISTING), "rb") as f:
            meta = pq.read_schema(f).metadata or {}
        about = json.loads(meta.get(b"walloc", b"{}"))
        return Listing(files=[self._p(LISTING)], filesystem=self.fs), about

    # --- shard markers ------------------------------------------------------------------------
    def marker_name(self, shard: int) -> str:
        return f"{MARKERS}/shard-{shard:06d}.json"

    def write_marker(self, marker: ShardMarker) -> None:
        self.write_json(self.marker_name(marker.stats["shard"]), marker.to_dict())

    def markers(self) -> list[ShardMarker]:
        """Every committed shard, in shard order."""
        folder = self._p(MARKERS)
        if not self.fs.exists(folder):
            return []
        names = sorted(p for p in self.fs.ls(folder, detail=False) if p.endswith(".json"))
        out = []
        for name in names:
            with self.fs.open(name, "rb") as f:
                out.append(ShardMarker.from_dict(json.loads(f.read())))
        return sorted(out, key=lambda m: m.stats["shard"])

    # --- error table and manifest -----------------------------------------------------------
    def write_errors(self, rows: list[dict[str, Any]]) -> None:
        schema = arrow_schema("errors.schema.json")
        for row in rows:
            if row["stage"] not in STAGES:
                raise ValueError(f"unknown error stage {row['stage']!r}")
        table = pa.Table.from_pylist(rows, schema=schema)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        atomic_write(self.fs, self._p(ERRORS), buf.getvalue())

    def read_errors(self) -> pa.Table:
        with self.fs.open(self._p(ERRORS), "rb") as f:
            return pq.read_table(f)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        validate(manifest, "manifest.schema.json", "manifest")
        self.write_json(MANIFEST, manifest)

    def read_manifest(self) -> dict[str, Any]:
        manifest = self.read_json(MANIFEST)
        validate(manifest, "manifest.schema.json", f"{self.url}/{MANIFEST}")
        return manifest


@dataclass
class Liveness:
    """Which committed entries are live. A key is re-encoded only when an append run noticed that its
    source changed, into a shard numbered after every earlier one: so a key's live entry (a sample or
    an error row) is the one in its highest-numbered shard, and every earlier one is superseded."""

    superseded: list[dict[str, Any]]  # {"key", "shard", "by_shard"}: replaced samples (manifest)
    live_errors: list[dict[str, Any]]  # error rows not replaced by a later entry
    written: int  # live samples


def liveness(markers: list[ShardMarker]) -> Liveness:
    where: dict[str, list[int]] = {}
    for m in sorted(markers, key=lambda m: m.stats["shard"]):
        for key in [*m.keys, *(e["key"] for e in m.errors)]:
            where.setdefault(key, []).append(m.stats["shard"])
    replaced = {(k, s): shards[i + 1] for k, shards in where.items() for i, s in enumerate(shards[:-1])}
    superseded, written, live_errors = [], 0, []
    for m in markers:
        shard = m.stats["shard"]
        for key in m.keys:
            if (key, shard) in replaced:
                superseded.append({"key": key, "shard": shard, "by_shard": replaced[key, shard]})
            else:
                written += 1
        live_errors += [e for e in m.errors if (e["key"], shard) not in replaced]
    superseded.sort(key=lambda e: (e["shard"], e["key"]))
    return Liveness(superseded=superseded, live_errors=live_errors, written=written)


def build_manifest(
    *,
    identity: RunIdentity,
    codec: dict[str, Any],
    latent: dict[str, Any],
    source: dict[str, Any],
    label_map: dict[str, int],
    markers: list[ShardMarker],
    inputs: int,
    appends: int = 0,
    buckets: dict[str, list[int]] | None = None,
) -> dict[str, Any]:
    """The manifest from the committed markers (deterministic: no clocks, sorted everything).

    buckets (--buckets): bucket name -> latent shape; the manifest lists each with its sample count
    (committed samples, summed over the shards' parts)."""
    import torch

    shards = []
    for m in markers:
        entry = dict(m.stats)
        entry["errors"] = len(m.errors)
        entry["slot_offset"] = m.slot_offset
        shards.append(entry)
    live = liveness(markers)
    written, errors = live.written, len(live.live_errors)
    settings = identity.settings
    extra: dict[str, Any] = {"superseded": live.superseded}
    # statistics of the live latents: every shard's histograms, less those of the samples superseded
    # by an append (exact integer sums); left out when an older marker has none, rather than
    # describing part of the run
    if all(m.statistics is not None for m in markers):
        stats = merge_statistics(
            [m.statistics for m in markers],
            latent["bits"],
            minus=[m.superseded_statistics for m in markers],
        )
        if stats is not None:
            extra["statistics"] = stats
    if buckets is not None:
        counts = {b: 0 for b in buckets}
        for m in markers:
            for part in m.stats.get("parts") or ():
                counts[part["bucket"]] = counts.get(part["bucket"], 0) + part["samples"]
        extra["buckets"] = {
            b: {"samples": counts[b], "latent_shape": list(buckets.get(b) or [])} for b in sorted(counts)
        }
    run_extra = {"flip_pair": True} if settings.get("flip_pair") else {}
    return {
        "format": FORMAT,
        "software": {"walloc_pipeline": __version__, "torch": torch.__version__.split("+")[0]},
        "run": {
            "settings_hash": identity.settings_hash,
            # the two hashes (besides the source bytes) that every sample's cache_key is made of
            "codec_hash": settings["codec_hash"],
            "preprocessing_hash": stable_hash(settings["preprocessing"]),
            "sink": settings["sink"],
            "shard_size": settings["shard_size"],
            "latent_format": settings["latent_format"],
            "appends": appends,
            **run_extra,
        },
        "codec": codec,
        "latent": latent,
        "preprocessing": settings["preprocessing"],
        "source": source | {"listing_hash": identity.listing_hash, "items": inputs},
        "label_map": dict(sorted(label_map.items(), key=lambda kv: kv[1])),
        "shards": shards,
        "totals": {"inputs": inputs, "written": written, "errors": errors},
    } | extra
