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
from .base import Source, SourceItem
from .listing import BATCH_ROWS, SCHEMA, Listing, _key_digests

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
        if not fs.isfile(p):
            raise FileNotFoundError(f"input manifest {self.path} does not exist")
        self.base = self.path.rsplit("/", 1)[0] if "/" in self.path else "."
        names = self._schema().names
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
        """A .csv/.tsv file, or a .parquet file with a column of paths and no image bytes."""
        if not path.lower().endswith(SUFFIXES):
            return False
        fs, p = fsspec.core.url_to_fs(path)
        if not fs.isfile(p):
            return False
        if not path.lower().endswith(".parquet"):
            return True
        schema = pq.read_schema(p, filesystem=fs)
        has_paths = any(
            n.lower() in PATH_COLUMNS and pa.types.is_string(schema.field(n).type) for n in schema.names
        )
        has_bytes = any(pa.types.is_struct(f.type) or pa.types.is_binary(f.type) for f in schema)
        return has_paths and not has_bytes

    # --- reading the manifest in batches ---

    def _is_csv(self) -> bool:
        return not self.path.lower().endswith(".parquet")

    def _schema(self) -> pa.Schema:
        return next(self._batches(None, rows=1024)).schema if self._is_csv() else self._parquet().schema_arrow

    def _parquet(self) -> pq.ParquetFile:
        return pq.ParquetFile(fsspec.open(self.path, "rb", **self.storage_options).open())

    def _batches(self, columns: list[str] | None, rows: int = BATCH_ROWS):
        if not self._is_csv():
            yield from self._parquet().iter_batches(rows, columns=columns)
            return
        delimiter = "\t" if self.path.lower().endswith(".tsv") else ","
        f = fsspec.open(self.path, "rb", **self.storage_options).open()
        reader = pacsv.open_csv(
            f,
            read_options=pacsv.ReadOptions(block_size=1 << 22),
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(include_columns=columns, strings_can_be_null=False),
        )
        yield from reader

    # --- the listing ---

    def _derived_keys(self, paths: pa.Array) -> pa.Array:
        """Keys from paths: scheme and extension dropped, unsafe characters to `_` (as safe_key)."""
        no_scheme = pc.replace_substring_regex(paths, _URL, "")
        stem = pc.replace_substring_regex(no_scheme, r"\.[^./]*$", "")
        safe = pc.replace_substring_regex(stem, r"[^A-Za-z0-9_-]+", "_")
        safe = pc.utf8_trim(safe, "_")
        return pc.if_else(pc.equal(pc.utf8_length(safe), 0), "item", safe)

    def _uris(self, paths: pa.Array) -> pa.Array:
        absolute = pc.or_(pc.match_substring_regex(paths, _URL), pc.starts_with(paths, "/"))
        joined = pc.binary_join_element_wise(pa.scalar(self.base.rstrip("/")), paths, "/")
        return pc.if_else(absolute, paths, joined)

    def listing(self, limit: int | None = None) -> Listing:
        if self._listing is not None:
            return self._listing.limit(limit) if limit is not None else self._listing
        columns = [c for c in (self.path_column, self.label_column, self.key_column) if c]
        # pass 1: class names (string labels) and repeated keys (8 bytes per input)
        digests, classes, rows = [], set(), 0
        for b in self._batches(columns):
            if limit is not None and rows >= limit:
                break
            b = b.slice(0, limit - rows) if limit is not None else b
            rows += len(b)
            keys = (
                b.column(self.key_column)
                if self.key_column
                else self._derived_keys(b.column(self.path_column))
            )
            digests.append(_key_digests(keys.to_pylist()))
            if self.label_column and pa.types.is_string(b.schema.field(self.label_column).type):
                classes |= set(pc.unique(b.column(self.label_column)).to_pylist())
        self._classes = {c: i for i, c in enumerate(sorted(c for c in classes if c is not None))}
        values, counts = np.unique(
            np.concatenate(digests) if digests else np.zeros(0, np.uint64), return_counts=True
        )
        repeated = set(values[counts > 1].tolist())
        # pass 2: the listing's columns, batch by batch, into a parquet file
        fd, out = tempfile.mkstemp(prefix="walloc-listing-", suffix=".parquet")
        os.close(fd)
        written = 0
        with pq.ParquetWriter(out, SCHEMA) as w:
            for b in self._batches(columns):
                if limit is not None and written >= limit:
                    break
                b = b.slice(0, limit - written) if limit is not None else b
                written += len(b)
                paths = b.column(self.path_column).cast(pa.string())
                keys = (
                    b.column(self.key_column).cast(pa.string())
                    if self.key_column
                    else self._derived_keys(paths)
                )
                if repeated and not self.key_column:  # colliding keys get a short hash of their path
                    d = _key_digests(keys.to_pylist())
                    keys = pa.array(
                        [
                            f"{k}_{hashlib.sha1(p.encode()).hexdigest()[:8]}" if int(x) in repeated else k
                            for k, p, x in zip(keys.to_pylist(), paths.to_pylist(), d, strict=True)
                        ]
                    )
                w.write_batch(
                    pa.record_batch(
                        [
                            keys,
                            self._uris(paths),
                            self._labels(b),
                            pa.nulls(len(b), pa.string()),
                            pa.nulls(len(b), pa.string()),
                        ],
                        schema=SCHEMA,
                    )
                )
        self._listing = Listing(files=[out])
        return self._listing

    def _labels(self, b: pa.RecordBatch) -> pa.Array:
        if not self.label_column:
            return pa.nulls(len(b), pa.int64())
        col = b.column(self.label_column)
        if pa.types.is_string(col.type):
            return pa.array(
                [self._classes.get(c) if c is not None else None for c in col.to_pylist()], pa.int64()
            )
        return col.cast(pa.int64())

    def list_items(self) -> list[SourceItem]:
        listing = self.listing()
        return listing.rows(0, len(listing))

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
            "path_column": self.path_column,
            "label_column": self.label_column,
            "key_column": self.key_column,
        }
