"""A run's inputs as columns, not objects: what lets one driver plan billions of inputs.

A `SourceItem` costs ~0.5 KB as a Python object (10M inputs: ~5 GB on the driver). A `Listing`
holds the same fields as Arrow columns (key, uri, label, fingerprint, meta as JSON), either in
memory or in parquet files that it streams in record batches: the driver hashes and checks it batch
by batch, shards refer to row ranges (`ListingSlice`), and SourceItems exist only for the shards in
flight (a slice turns into its items when it is sent to a worker).

The listing hash is the one `listing_hash(items)` gives (resume compares it with earlier runs'),
computed incrementally.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .base import KEY_PATTERN, SourceItem, UnsafeKeyError

SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("uri", pa.string()),
        ("label", pa.int64()),
        ("fingerprint", pa.string()),
        ("meta", pa.string()),  # JSON object; null = {}
    ]
)
BATCH_ROWS = 65536
# how a source runs one function over its partitions (files, prefixes): results in argument order.
# The runtime passes Ray tasks or threads; sources know nothing of either.
MapFn = Callable[[Callable[..., Any], list[tuple]], list[Any]]
_PLAIN = r"^[ -!#-\[\]-~]*$"  # printable ASCII without `"` and `\`: json.dumps leaves it as it is


def serial_map(fn: Callable[..., Any], args: list[tuple]) -> list[Any]:
    return [fn(*a) for a in args]


# a partition's columns as tar and audio sources build them: the listing's, plus the unique `id` a
# repeated key is hashed on (merge_partitions)
PARTITION_SCHEMA = SCHEMA.append(pa.field("id", pa.string()))


def merge_partitions(tables: Sequence[pa.Table]) -> pa.Table:
    """Partitions (a folder, a prefix, a tar each) in listing order -> one table, keys made unique
    as base.unique_keys makes them: a key that repeats anywhere gets a short hash of its row's `id`.

    Each partition's table has tar-safe `key`s and a unique `id` per row (its full path); the `id`
    column is dropped, other columns are kept. Vectorised (Arrow counts the keys): the driver does no
    per-input Python work unless keys repeat."""
    table = pa.concat_tables(tables)
    keys = table.column("key")
    counts = pc.value_counts(keys)
    repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    if len(repeated):
        hit = pc.is_in(keys, value_set=repeated).to_pylist()
        fixed = [
            f"{k}_{hashlib.sha1(i.encode()).hexdigest()[:8]}" if h else k
            for k, i, h in zip(keys.to_pylist(), table.column("id").to_pylist(), hit, strict=True)
        ]
        table = table.set_column(table.schema.get_field_index("key"), "key", pa.array(fixed, pa.string()))
    return table.drop_columns(["id"])


def items_table(items: Sequence[SourceItem]) -> pa.Table:
    """SourceItems -> the listing's columns."""
    return pa.table(
        {
            "key": [it.key for it in items],
            "uri": [it.uri for it in items],
            "label": [it.label for it in items],
            "fingerprint": [it.fingerprint for it in items],
            "meta": [json.dumps(it.meta, sort_keys=True) if it.meta else None for it in items],
        },
        schema=SCHEMA,
    )


def batch_items(batch: pa.RecordBatch | pa.Table) -> list[SourceItem]:
    """The listing's columns -> SourceItems (for one shard: the only place they are materialised)."""
    cols = batch.to_pydict()
    return [
        SourceItem(key=k, uri=u, label=lab, meta=json.loads(m) if m else {}, fingerprint=f)
        for k, u, lab, f, m in zip(
            cols["key"], cols["uri"], cols["label"], cols["fingerprint"], cols["meta"], strict=True
        )
    ]


class Listing:
    """The sorted inputs of a run: an Arrow table in memory, or parquet files read in batches."""

    def __init__(self, table: pa.Table | None = None, files: Sequence[str] = (), filesystem: Any = None):
        if (table is None) == (not files):
            raise ValueError("a Listing is either a table or parquet files")
        self.table = table.cast(SCHEMA) if table is not None else None
        self.files = list(files)
        self.filesystem = filesystem
        self._rows = len(table) if table is not None else None
        self._row_groups: list[tuple[int, int, tuple[int, int]]] | None = None
        self._files_open: dict[int, pq.ParquetFile] = {}
        self._cache: dict[tuple[int, int], pa.Table] = {}  # the last row groups read

    @classmethod
    def from_items(cls, items: Sequence[SourceItem]) -> Listing:
        return cls(items_table(items))

    # --- size and streaming ---

    def __len__(self) -> int:
        if self._rows is None:
            self._rows = sum(n for _, n, _ in self._groups())
        return self._rows

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        if self.table is not None:
            yield from (self.table.select(columns) if columns else self.table).to_batches(BATCH_ROWS)
            return
        for i, f in enumerate(self.files):
            yield from self._parquet(i, f).iter_batches(BATCH_ROWS, columns=columns)

    def limit(self, n: int) -> Listing:
        """The first n inputs (--limit)."""
        if n >= len(self):
            return self
        if self.table is not None:
            return Listing(self.table.slice(0, n))
        taken, out = 0, []
        for batch in self.batches():
            out.append(batch.slice(0, n - taken))
            taken += len(out[-1])
            if taken >= n:
                break
        return Listing(pa.Table.from_batches(out, schema=SCHEMA))

    # --- rows -> items ---

    def rows(self, start: int, stop: int) -> list[SourceItem]:
        """Items [start, stop) of the listing (from files: only the row groups that hold them; the
        last groups read are kept, so shards taken in order read each group once)."""
        if self.table is not None:
            return batch_items(self.table.slice(start, stop - start))
        out: list[SourceItem] = []
        for g_first, g_rows, key in self._groups():
            if g_first >= stop or g_first + g_rows <= start:
                continue
            table = self._group(key)
            lo = max(start, g_first)
            out += batch_items(table.slice(lo - g_first, min(stop, g_first + g_rows) - lo))
        return out

    def items(self) -> list[SourceItem]:
        """Every input as a SourceItem (a source's list_items(): small listings, tests)."""
        return self.rows(0, len(self))

    def _groups(self) -> list[tuple[int, int, tuple[int, int]]]:
        """(first row, rows, (file, row group)) of every row group, in listing order."""
        if self._row_groups is None:
            self._row_groups, row = [], 0
            for i, f in enumerate(self.files):
                meta = self._parquet(i, f).metadata
                for g in range(meta.num_row_groups):
                    n = meta.row_group(g).num_rows
                    self._row_groups.append((row, n, (i, g)))
                    row += n
        return self._row_groups

    def _parquet(self, i: int, f: str) -> pq.ParquetFile:
        if i not in self._files_open:
            self._files_open[i] = pq.ParquetFile(f, filesystem=self.filesystem)
        return self._files_open[i]

    def _group(self, key: tuple[int, int]) -> pa.Table:
        if key not in self._cache:
            if len(self._cache) >= 2:
                self._cache.pop(next(iter(self._cache)))
            i, g = key
            self._cache[key] = self._parquet(i, self.files[i]).read_row_group(g).cast(SCHEMA)
        return self._cache[key]

    def take(self, indices: np.ndarray) -> list[SourceItem]:
        """Items at these row numbers (append runs' new inputs are not one range)."""
        if self.table is not None:
            return batch_items(self.table.take(pa.array(indices)))
        return [it for i in indices for it in self.rows(int(i), int(i) + 1)]

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_files_open": {}, "_cache": {}}

    def keys_and_fingerprints(self) -> tuple[list[str], list[str | None]]:
        """Every key and fingerprint (append compares them with the output's: O(inputs) by nature)."""
        keys: list[str] = []
        fps: list[str | None] = []
        for b in self.batches(["key", "fingerprint"]):
            keys += b.column(0).to_pylist()
            fps += b.column(1).to_pylist()
        return keys, fps

    def any_labelled(self, rows: int = 100) -> bool:
        for b in self.batches(["label"]):
            return b.column(0).slice(0, rows).null_count < min(rows, len(b))
        return False

    # --- identity and checks, streamed ---

    def hash(self) -> str:
        """= listing_hash(items): sha256 over one JSON line [key, uri, label] per input."""
        h = hashlib.sha256()
        for b in self.batches(["key", "uri", "label"]):
            keys, uris = b.column(0), b.column(1)
            plain = pc.all(
                pc.match_substring_regex(pc.binary_join_element_wise(keys, uris, ""), _PLAIN)
            ).as_py()
            labels = b.column(2).to_pylist()
            if plain is not False:  # no character json.dumps would escape: format directly
                lines = [
                    f'["{k}","{u}",{"null" if lab is None else lab}]\n'
                    for k, u, lab in zip(keys.to_pylist(), uris.to_pylist(), labels, strict=True)
                ]
            else:
                lines = [
                    json.dumps([k, u, lab], separators=(",", ":")) + "\n"
                    for k, u, lab in zip(keys.to_pylist(), uris.to_pylist(), labels, strict=True)
                ]
            h.update("".join(lines).encode())
        return h.hexdigest()

    def check_keys(self) -> None:
        """Every key tar-safe and unique (base.check_keys, in batches: 8 bytes per input held)."""
        digests, bad, shown = [], 0, []
        for b in self.batches(["key"]):
            keys = b.column(0)
            ok = pc.fill_null(pc.match_substring_regex(keys, KEY_PATTERN.pattern), False)
            if not pc.all(ok).as_py():
                wrong = [k for k, good in zip(keys.to_pylist(), ok.to_pylist(), strict=True) if not good]
                bad += len(wrong)
                shown += wrong[: 5 - len(shown)]
                continue
            digests.append(_key_digests(keys.to_pylist()))
        if bad:
            raise UnsafeKeyError(
                f"{bad} key(s) are not tar-safe ([A-Za-z0-9_-]+): {', '.join(repr(k) for k in shown)}"
                + (", ..." if bad > len(shown) else "")
                + "; make them with pipeline.sources.base.unique_keys"
            )
        if not digests:
            return
        all_digests = np.concatenate(digests)
        values, counts = np.unique(all_digests, return_counts=True)
        if (counts > 1).any():
            suspects = set(values[counts > 1].tolist())
            seen: dict[str, int] = {}
            for b in self.batches(["key"]):
                keys = b.column(0).to_pylist()
                for k, d in zip(keys, _key_digests(keys).tolist(), strict=True):
                    if d in suspects:
                        seen[k] = seen.get(k, 0) + 1
            repeated = sorted(k for k, n in seen.items() if n > 1)
            if repeated:
                raise UnsafeKeyError(
                    f"{len(repeated)} key(s) repeat in the listing: {', '.join(repeated[:5])}"
                )

    def write(self, where: Any, row_group: int = BATCH_ROWS, about: dict[str, Any] | None = None) -> None:
        """Persist as parquet (a path or an open file); row groups of `row_group` rows; `about`
        (JSON) in the file's metadata."""
        schema = SCHEMA.with_metadata({"walloc": json.dumps(about, sort_keys=True)}) if about else SCHEMA
        with pq.ParquetWriter(where, schema) as w:
            for b in self.batches():
                w.write_batch(b, row_group_size=row_group)


def _key_digests(keys: list[str]) -> np.ndarray:
    """64-bit digests of keys (uniqueness is checked on these; equal digests are then compared)."""
    return np.array(
        [int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little") for k in keys],
        dtype=np.uint64,
    )


@dataclass(frozen=True)
class ListingSlice(Sequence):
    """A shard's inputs as rows of the listing: rows [start, stop), or the given row numbers.

    Behaves as the sequence of its SourceItems, materialised when first used; pickled (sent to a
    worker) as those items, never as the listing."""

    listing: Listing
    start: int = 0
    stop: int = 0
    indices: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else self.stop - self.start

    def _items(self) -> tuple[SourceItem, ...]:
        if self.indices is not None:
            return tuple(self.listing.take(self.indices))
        return tuple(self.listing.rows(self.start, self.stop))

    def __getitem__(self, i):
        return self._items()[i]

    def __iter__(self):
        return iter(self._items())

    def __eq__(self, other: object) -> bool:
        return tuple(self) == tuple(other) if isinstance(other, Sequence) else NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __reduce__(self):
        return (tuple, (self._items(),))
