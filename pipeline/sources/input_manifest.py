"""An input manifest: a parquet or CSV file of paths/URLs (+ an optional label column).

The convention of img2dataset and most data teams: the list of inputs is itself data, made once by
whatever knows the corpus, so nothing has to list a bucket of a billion objects. The file's row
order is the listing order. Columns (names are matched case-insensitively):

- the input: `path`, `url`, `uri`, `file`, `filename` or `image_path` (or `path_column=`); relative
  paths are relative to the manifest's folder;
- a label (optional): `label`, `class`, `target` or `y` (or `label_column=`, "" for none): integers
  are used as they are, strings are class names indexed in sorted order;
- a key (optional): `key` (or `key_column=`); else the key is made from the path, as image folders
  make theirs (extension dropped, unsafe characters to `_`, a short hash where two collide).

The listing is built in record batches into a parquet file (the driver holds 8 bytes per input, not
the listing): 10M inputs list in about a minute (benchmarks/driver_scale.py).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..registry import register_source
from .base import NoInputsError, Source, SourceItem
from .listing import BATCH_ROWS, SCHEMA, Listing, MapFn, _key_digests, serial_map

PATH_COLUMNS = ("path", "url", "uri", "file", "filename", "image_path")
LABEL_COLUMNS = ("label", "class", "target", "y")
SUFFIXES = (".parquet", ".csv", ".tsv")
_URL = r"^[A-Za-z][A-Za-z0-9+.-]*://"


def _find(names: list[str], wanted: tuple[str, ...], given: str | None, what: str, path: str) -> str | None:
    lower = {n.lower(): n for n in names}
    if given is not None:
        if given == "":
            return None
        if given.lower() not in lower:
            raise ValueError(f"{path}: no {what} column {given!r}; columns: {', '.join(names)}")
        return lower[given.lower()]
    return next((lower[w] for w in wanted if w in lower), None)


@register_source("manifest")
class InputManifestSource(Source):
    """Inputs named by the rows of a parquet/CSV file; their bytes are read by path or URL."""

    modality = "image"
    detect_priority = 10  # before `hf`, which also takes .parquet files (of image bytes)

    def __init__(
        self,
        path: str,
        path_column: str | None = None,
        label_column: str | None = None,
        key_column: str | None = None,
        modality: str = "image",
        storage_options: dict[str, Any] | None = None,
    ):
        self.path = str(path)
        self.modality = modality
        self.storage_options = dict(storage_options or {})
        fs, p = fsspec.core.url_to_fs(self.path, **self.storage_options)
        if fs.isfile(p):
            self.files = [self.path]
        elif fs.isdir(p):  # a folder of manifest files (one per class, crawl, day...): the partitions
            self.files = manifest_files(fs, p)
            if not self.files:
                raise NoInputsError(f"no manifest files ({', '.join(SUFFIXES)}) in {self.path}")
        else:
            raise FileNotFoundError(f"input manifest {self.path} does not exist")
        names = self._schema(self.files[0]).names
        self.path_column = _find(names, PATH_COLUMNS, path_column, "path", self.path)
        if self.path_column is None:
            raise ValueError(
                f"{self.path}: no column of input paths (one of {', '.join(PATH_COLUMNS)}, or "
                f"--source-option path_column=NAME); columns: {', '.join(names)}"
            )
        self.label_column = _find(names, LABEL_COLUMNS, label_column, "label", self.path)
        self.key_column = _find(names, ("key",), key_column, "key", self.path)
        self._classes: dict[str, int] = {}
        self._listing: Listing | None = None

    @staticmethod
    def detect(path: str) -> bool:
        """A .csv/.tsv file, or a .parquet file with a column of paths and no image bytes; or a folder
        whose files are all such manifests."""
        fs, p = fsspec.core.url_to_fs(path)
        if fs.isdir(p):
            top = [q for q in fs.ls(p, detail=False) if not q.rsplit("/", 1)[-1].startswith((".", "_"))]
            files = manifest_files(fs, p)
            return bool(files) and len(files) == len(top) and InputManifestSource.detect(files[0])
        if not path.lower().endswith(SUFFIXES) or not fs.isfile(p):
            return False
        if not path.lower().endswith(".parquet"):
            return True
        schema = pq.read_schema(p, filesystem=fs)
        has_paths = any(
            n.lower() in PATH_COLUMNS and pa.types.is_string(schema.field(n).type) for n in schema.names
        )
        has_bytes = any(pa.types.is_struct(f.type) or pa.types.is_binary(f.type) for f in schema)
        return has_paths and not has_bytes

    # --- reading a manifest file in batches ---

    def _schema(self, file: str) -> pa.Schema:
        if file.lower().endswith(".parquet"):
            return pq.ParquetFile(fsspec.open(file, "rb", **self.storage_options).open()).schema_arrow
        return next(self._batches(file, None, rows=1024)).schema

    def _batches(self, file: str, columns: list[str] | None, rows: int = BATCH_ROWS):
        if file.lower().endswith(".parquet"):
            pf = pq.ParquetFile(fsspec.open(file, "rb", **self.storage_options).open())
            yield from pf.iter_batches(rows, columns=columns)
            return
        delimiter = "\t" if file.lower().endswith(".tsv") else ","
        f = fsspec.open(file, "rb", **self.storage_options).open()
        reader = pacsv.open_csv(
            f,
            read_options=pacsv.ReadOptions(block_size=1 << 22),
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(include_columns=columns, strings_can_be_null=False),
        )
        yield from reader

    def _columns(self) -> list[str]:
        return [c for c in (self.path_column, self.label_column, self.key_column) if c]

    # --- the listing: two passes, each one task per manifest file ---

    def _derived_keys(self, paths: pa.Array) -> pa.Array:
        """Keys from paths: scheme and extension dropped, unsafe characters to `_` (as safe_key)."""
        no_scheme = pc.replace_substring_regex(paths, _URL, "")
        stem = pc.replace_substring_regex(no_scheme, r"\.[^./]*$", "")
        safe = pc.replace_substring_regex(stem, r"[^A-Za-z0-9_-]+", "_")
        safe = pc.utf8_trim(safe, "_")
        return pc.if_else(pc.equal(pc.utf8_length(safe), 0), "item", safe)

    def _keys(self, b: pa.RecordBatch) -> pa.Array:
        if self.key_column:
            return b.column(self.key_column).cast(pa.string())
        return self._derived_keys(b.column(self.path_column).cast(pa.string()))

    @staticmethod
    def _uris(paths: pa.Array, base: str) -> pa.Array:
        absolute = pc.or_(pc.match_substring_regex(paths, _URL), pc.starts_with(paths, "/"))
        joined = pc.binary_join_element_wise(pa.scalar(base), paths, "/")
        return pc.if_else(absolute, paths, joined)

    def scan_partition(self, file: str, limit: int | None = None) -> tuple[np.ndarray, list[str], int]:
        """Pass 1 over one manifest file: key digests (repeats are found across files), class names."""
        digests, classes, rows = [], set(), 0
        for b in self._batches(file, self._columns()):
            if limit is not None and rows >= limit:
                break
            b = b.slice(0, limit - rows) if limit is not None else b
            rows += len(b)
            digests.append(_key_digests(self._keys(b).to_pylist()))
            if self.label_column and pa.types.is_string(b.schema.field(self.label_column).type):
                classes |= set(pc.unique(b.column(self.label_column)).to_pylist())
        found = np.concatenate(digests) if digests else np.zeros(0, np.uint64)
        return found, sorted(c for c in classes if c is not None), rows

    def list_partition(
        self, file: str, repeated: set[int], classes: dict[str, int], limit: int | None = None
    ):
        """Pass 2 over one manifest file: its rows as the listing's columns (an Arrow table)."""
        base = file.rsplit("/", 1)[0] if "/" in file else "."
        out, written = [], 0
        for b in self._batches(file, self._columns()):
            if limit is not None and written >= limit:
                break
            b = b.slice(0, limit - written) if limit is not None else b
            written += len(b)
            paths = b.column(self.path_column).cast(pa.string())
            keys = self._keys(b)
            if repeated and not self.key_column:  # colliding keys get a short hash of their path
                d = _key_digests(keys.to_pylist())
                keys = pa.array(
                    [
                        f"{k}_{hashlib.sha1(p.encode()).hexdigest()[:8]}" if int(x) in repeated else k
                        for k, p, x in zip(keys.to_pylist(), paths.to_pylist(), d, strict=True)
                    ]
                )
            n = len(b)
            columns = [keys, self._uris(paths, base), self._labels(b, classes)]
            out.append(
                pa.record_batch([*columns, pa.nulls(n, pa.string()), pa.nulls(n, pa.string())], schema=SCHEMA)
            )
        return pa.Table.from_batches(out, schema=SCHEMA)

    def listing(self, limit: int | None = None, map_fn: MapFn | None = None) -> Listing:
        """Both passes, one task per manifest file through `map_fn` (the runtime passes Ray tasks or
        threads; default: one after another), then the partitions written in order to a parquet file."""
        if self._listing is not None:
            return self._listing.limit(limit) if limit is not None else self._listing
        if limit is not None or map_fn is None:  # --limit: file by file, until enough rows
            map_fn, scans, left = serial_map, [], limit
            for f in self.files:
                scans.append(self.scan_partition(f, left))
                left = None if left is None else left - scans[-1][2]
            limits = [n for _, _, n in scans] if limit is not None else [None] * len(self.files)
        else:
            limits = [None] * len(self.files)
            scans = map_fn(self.scan_partition, [(f, None) for f in self.files])
        digests = np.concatenate([d for d, _, _ in scans]) if scans else np.zeros(0, np.uint64)
        self._classes = {c: i for i, c in enumerate(sorted({c for _, cs, _ in scans for c in cs}))}
        values, counts = np.unique(digests, return_counts=True)
        repeated = set(values[counts > 1].tolist())
        args = [(f, repeated, self._classes, n) for f, n in zip(self.files, limits, strict=True)]
        fd, out = tempfile.mkstemp(prefix="walloc-listing-", suffix=".parquet")
        os.close(fd)
        with pq.ParquetWriter(out, SCHEMA) as w:
            for table in map_fn(self.list_partition, args):
                w.write_table(table, row_group_size=BATCH_ROWS)
        listing = Listing(files=[out])
        if limit is None:  # the whole listing is kept; a limited one is not what a later call wants
            self._listing = listing
        return listing

    def _labels(self, b: pa.RecordBatch, classes: dict[str, int]) -> pa.Array:
        if not self.label_column:
            return pa.nulls(len(b), pa.int64())
        col = b.column(self.label_column)
        if pa.types.is_string(col.type):
            return pa.array([classes.get(c) if c is not None else None for c in col.to_pylist()], pa.int64())
        return col.cast(pa.int64())

    def list_items(self) -> list[SourceItem]:
        return self.listing().items()

    def __getstate__(self) -> dict[str, Any]:
        """Workers only read items by URI: the listing stays on the driver."""
        return self.__dict__ | {"_listing": None}

    def read_bytes(self, item: SourceItem) -> bytes:
        with fsspec.open(item.uri, "rb", **self.storage_options) as f:
            return f.read()

    def label_map(self) -> dict[str, int]:
        return dict(self._classes)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.registry_name,
            "manifest": self.path,
            "files": len(self.files),
            "path_column": self.path_column,
            "label_column": self.label_column,
            "key_column": self.key_column,
        }


def manifest_files(fs: Any, folder: str) -> list[str]:
    """The manifest files at the top of a folder, sorted (their order is the listing's)."""
    names = sorted(q for q in fs.ls(folder, detail=False) if q.lower().endswith(SUFFIXES))
    return [fs.unstrip_protocol(q) if fs.protocol not in ("file", ("file", "local")) else q for q in names]
