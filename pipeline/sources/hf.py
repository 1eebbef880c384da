"""Hugging Face `datasets` image corpora: local `save_to_disk` folders and parquet/arrow files, or a
Hub id when online; read row by row, as the encoded image bytes (never decoded here).

    a `save_to_disk` folder (Dataset or DatasetDict)    datasets.load_from_disk (memory-mapped)
    parquet files: one file, or a folder of them        pyarrow, one row group at a time
    .arrow files (the datasets cache / stream format)   datasets.Dataset.from_file (memory-mapped)
    a Hub id: `hf://datasets/<id>`, or `--source hf <id>`  datasets.load_dataset(id, split=...)

Columns: `image_column` defaults to the first column of `Image` feature type, else one named
image/img/jpg/jpeg/png/webp; `label_column` to the first `ClassLabel`, else label/labels/cls/class
(pass label_column="" for none). Label names come from the ClassLabel feature.
Splits: a DatasetDict's split names; for files, the first of train/validation/valid/val/test/dev
found in the file's relative path (`data/train-00000-of-00004.parquet` is "train"), else "train".
The default split is "train" when present, else the only split (several: name one).

item.uri is "<path>#<split>/<row>" (row: index within the split); item.meta also says where the row
lives (file, row group) so that a worker reads it without listing again. Parquet is read through
pyarrow directly, because `load_dataset("parquet")` would first copy the corpus into the cache.
A row whose image is null, or whose path does not resolve, raises from read_bytes: an error row.
Sources travel to Ray workers: opened datasets are cached per process and never pickled.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from typing import Any

import fsspec
import pyarrow as pa

from ..registry import register_source
from .base import NoInputsError, Source, SourceItem
from .listing import SCHEMA, Listing, MapFn, serial_map

IMAGE_NAMES = ("image", "img", "jpg", "jpeg", "png", "webp")
LABEL_NAMES = ("label", "labels", "cls", "class")
SPLIT_NAMES = ("train", "validation", "valid", "val", "test", "dev")
HUB_PREFIX = "hf://datasets/"
CACHE_ENTRIES = 4  # opened datasets / decoded row groups kept per worker process


class MissingImageError(ValueError):
    """A row with no image (null, or an unresolvable path)."""


def file_split(relpath: str) -> str:
    """The split a data file belongs to, from its relative path (see the module docstring)."""
    tokens = re.split(r"[-_./\\]+", relpath.lower())
    return next((t for t in tokens if t in SPLIT_NAMES), "train")


def _layout(path: str) -> str:
    """disk | disk-dict | parquet | arrow | hub."""
    if path.startswith(HUB_PREFIX):
        return "hub"
    fs, p = fsspec.core.url_to_fs(path)
    if not fs.exists(p):
        if re.fullmatch(r"[\w.-]+/[\w.-]+", path):
            return "hub"
        raise FileNotFoundError(f"input {path} does not exist (and is not a Hub id)")
    if fs.isdir(p):
        if fs.exists(f"{p}/dataset_dict.json"):
            return "disk-dict"
        if fs.exists(f"{p}/state.json") and fs.exists(f"{p}/dataset_info.json"):
            return "disk"
        files = fs.find(p)
        if any(f.endswith(".parquet") for f in files):
            return "parquet"
        if any(f.endswith(".arrow") for f in files):
            return "arrow"
        raise NoInputsError(f"{path} is neither a save_to_disk folder nor holds .parquet/.arrow files")
    if p.endswith(".parquet"):
        return "parquet"
    if p.endswith(".arrow"):
        return "arrow"
    raise ValueError(f"{path}: not a Hugging Face dataset (.parquet, .arrow or a save_to_disk folder)")


def _pick_column(features: dict[str, Any], kind: str, names: tuple[str, ...]) -> str | None:
    for name, feature in features.items():
        if type(feature).__name__ == kind:
            return name
    lowered = {n.lower(): n for n in features}
    return next((lowered[n] for n in names if n in lowered), None)


@register_source("hf")
class HFSource(Source):
    """Rows of a Hugging Face dataset with an image column; see the module docstring."""

    modality = "image"

    def __init__(
        self,
        path: str,
        split: str | None = None,
        image_column: str | None = None,
        label_column: str | None = None,
        revision: str | None = None,
    ):
        self.path = str(path)
        self.layout = _layout(self.path)
        self.revision = revision
        self._cache: dict[Any, Any] = {}
        self.split = self._resolve_split(split)
        features = self._features()
        self.image_column = image_column or _pick_column(features, "Image", IMAGE_NAMES)
        if self.image_column is None or self.image_column not in features:
            raise ValueError(
                f"{self.path}: no image column (columns: {sorted(features)}); pass image_column=..."
            )
        if label_column == "":
            self.label_column = None
        else:
            self.label_column = label_column or _pick_column(features, "ClassLabel", LABEL_NAMES)
            if self.label_column is not None and self.label_column not in features:
                raise ValueError(
                    f"{self.path}: no column {self.label_column!r} (columns: {sorted(features)})"
                )
        feature = features.get(self.label_column) if self.label_column else None
        self.label_names: list[str] = list(getattr(feature, "names", None) or [])

    # --- pickling: opened datasets and row groups stay in the process that opened them -------
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_cache", "_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._cache = {}

    @staticmethod
    def detect(path: str) -> bool:
        """A save_to_disk folder, .parquet/.arrow files (or a folder of them), or hf://datasets/<id>."""
        if path.startswith(HUB_PREFIX):
            return True
        fs, p = fsspec.core.url_to_fs(path)
        if p.endswith((".parquet", ".arrow")):
            return fs.isfile(p)
        if not fs.isdir(p):
            return False
        if fs.exists(f"{p}/dataset_dict.json") or fs.exists(f"{p}/state.json"):
            return True
        top = fs.ls(p, detail=False)
        data = [q for q in top if q.rstrip("/").endswith("/data") and fs.isdir(q)]
        candidates = top + (fs.ls(data[0], detail=False) if data else [])
        return any(q.endswith((".parquet", ".arrow")) for q in candidates)

    # --- structure ----------------------------------------------------------------------------
    def _hub_id(self) -> str:
        return self.path[len(HUB_PREFIX) :] if self.path.startswith(HUB_PREFIX) else self.path

    def _files(self) -> list[str]:
        """Data files (parquet/arrow layouts), sorted, as fsspec URLs."""
        fs, p = fsspec.core.url_to_fs(self.path)
        suffix = ".parquet" if self.layout == "parquet" else ".arrow"
        found = sorted(fs.find(p)) if fs.isdir(p) else [p]
        return [fs.unstrip_protocol(f) for f in found if f.endswith(suffix)]

    def _relative(self, url: str) -> str:
        base = fsspec.core.url_to_fs(self.path)[1].rstrip("/")
        path = fsspec.core.url_to_fs(url)[1]
        return path[len(base) + 1 :] if path.startswith(base + "/") else path.rsplit("/", 1)[-1]

    def _split_files(self) -> list[str]:
        return [f for f in self._files() if file_split(self._relative(f)) == self.split]

    def _splits(self) -> list[str]:
        if self.layout == "disk-dict":
            import json

            with fsspec.open(f"{self.path.rstrip('/')}/dataset_dict.json", "r") as f:
                return list(json.load(f)["splits"])
        if self.layout in ("parquet", "arrow"):
            return sorted({file_split(self._relative(f)) for f in self._files()})
        return []  # a single Dataset, or the Hub (any split name; load_dataset checks it)

    def _resolve_split(self, split: str | None) -> str:
        splits = self._splits()
        if split is not None:
            if splits and split not in splits:
                raise ValueError(f"{self.path}: no split {split!r} (splits: {splits})")
            return split
        if not splits or "train" in splits:
            return "train"
        if len(splits) == 1:
            return splits[0]
        raise ValueError(f"{self.path} has splits {splits}: choose one with split=...")

    def _features(self) -> dict[str, Any]:
        if self.layout == "parquet":
            import datasets
            import pyarrow.parquet as pq

            with fsspec.open(self._split_files()[0], "rb") as f:
                return dict(datasets.Features.from_arrow_schema(pq.read_schema(f)))
        if self.layout == "arrow":
            return dict(self._arrow_file(self._split_files()[0]).features)
        return dict(self._dataset().features)

    # --- opened data, cached per process --------------------------------------------------------
    def _cached(self, key: Any, make):
        lock = self.__dict__.setdefault("_lock", threading.Lock())
        with lock:
            if key in self._cache:
                self._cache[key] = self._cache.pop(key)  # most recent last
                return self._cache[key]
        value = make()
        with lock:
            self._cache[key] = value
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.pop(next(iter(self._cache)))
        return value

    def _dataset(self):
        """The split as a datasets.Dataset (disk and hub layouts)."""

        def load():
            import datasets

            if self.layout == "hub":
                return datasets.load_dataset(self._hub_id(), split=self.split, revision=self.revision)
            ds = datasets.load_from_disk(self.path)
            return ds[self.split] if self.layout == "disk-dict" else ds

        return self._cached(("dataset",), load)

    def _view(self):
        """The split, arrow-formatted: rows come back as arrow tables, images undecoded."""
        return self._cached(("view",), lambda: self._dataset().with_format("arrow"))

    def _arrow_file(self, url: str):
        """One .arrow data file, memory-mapped and arrow-formatted."""

        def load():
            import datasets

            return datasets.Dataset.from_file(fsspec.core.url_to_fs(url)[1]).with_format("arrow")

        return self._cached(("arrow", url), load)

    def _row_group(self, url: str, group: int):
        def read():
            import pyarrow.parquet as pq

            with fsspec.open(url, "rb") as f:
                return pq.ParquetFile(f).read_row_group(group, columns=[self.image_column])

        return self._cached(("parquet", url, group), read)

    # --- the Source API -------------------------------------------------------------------------
    def _file_rows(self, url: str) -> int:
        """Rows in one data file (parquet: from its footer; arrow: memory-mapped)."""
        if self.layout == "parquet":
            import pyarrow.parquet as pq

            with fsspec.open(url, "rb") as f:
                return pq.ParquetFile(f).metadata.num_rows
        return len(self._arrow_file(url))

    def _file_rows_where(self, url: str) -> tuple[list[dict[str, Any]], list[int | None]]:
        """Where each row of one data file is (file, row group, row in it) and its label."""
        if self.layout == "parquet":
            import pyarrow.parquet as pq

            with fsspec.open(url, "rb") as f:
                pf = pq.ParquetFile(f)
                column = pf.read(columns=[self.label_column]).column(0) if self.label_column else None
                labels = self._labels(column, pf.metadata.num_rows)
                sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
            where = [
                {"file": url, "row_group": g, "group_row": r} for g, n in enumerate(sizes) for r in range(n)
            ]
            return where, labels
        view = self._arrow_file(url)
        return [{"file": url, "file_row": r} for r in range(len(view))], self._labels(view, len(view))

    def list_partition(self, where: list[dict[str, Any]], labels: list[int | None], first: int, width: int):
        """Rows [first, first + len(where)) of the split as the listing's columns."""
        rows = []
        for i, (at, label) in enumerate(zip(where, labels, strict=True)):
            row = first + i
            meta = {"split": self.split, "row": row} | at
            if label is not None and label < len(self.label_names):
                meta["class"] = self.label_names[label]
            key = f"{self.split}_{row:0{width}d}"
            rows.append((key, f"{self.path}#{self.split}/{row}", label, json.dumps(meta, sort_keys=True)))
        key, uri, label, meta = (list(c) for c in zip(*rows, strict=True)) if rows else ([], [], [], [])
        n = len(key)
        return pa.table(
            {"key": key, "uri": uri, "label": label, "fingerprint": [None] * n, "meta": meta}, schema=SCHEMA
        )

    def _file_partition(self, url: str, first: int, width: int) -> pa.Table:
        return self.list_partition(*self._file_rows_where(url), first, width)

    def listing(self, limit: int | None = None, map_fn: MapFn | None = None) -> Listing:
        """parquet / arrow layouts: one partition per data file (row counts from the files' footers
        first, so every row's number is known); a saved or Hub dataset: one table."""
        if self.layout in ("parquet", "arrow"):
            files = self._split_files()
            counts = [self._file_rows(f) for f in files]
            width = max(8, len(str(sum(counts))))
            firsts = [0, *itertools.accumulate(counts)][:-1]
            args = [(f, first, width) for f, first in zip(files, firsts, strict=True)]
            tables = (map_fn or serial_map)(self._file_partition, args)
        else:
            view = self._view()
            labels = self._labels(view, len(view))
            tables = [self.list_partition([{}] * len(view), labels, 0, max(8, len(str(len(view)))))]
        listing = Listing(pa.concat_tables(tables) if tables else SCHEMA.empty_table())
        return listing.limit(limit) if limit is not None else listing

    def list_items(self) -> list[SourceItem]:
        return self.listing().items()

    def _labels(self, data: Any, n: int) -> list[int | None]:
        """Integer labels (None where null, negative or unlabelled) from an arrow column, or from an
        arrow-formatted Dataset."""
        if self.label_column is None:
            return [None] * n
        if hasattr(data, "select_columns"):  # a Dataset: read the label column only
            data = data.select_columns([self.label_column]).with_format("arrow")[:][self.label_column]
        values = data.to_pylist()
        return [v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None for v in values]

    def read_bytes(self, item: SourceItem) -> bytes:
        meta = item.meta
        split, row = meta.get("split", self.split), int(meta["row"])
        if "row_group" in meta:
            value = self._row_group(meta["file"], int(meta["row_group"])).column(0)[int(meta["group_row"])]
        elif "file_row" in meta:
            value = self._arrow_file(meta["file"])[int(meta["file_row"])].column(self.image_column)[0]
        else:
            value = self._view()[row].column(self.image_column)[0]
        return self._image_bytes(value.as_py(), f"row {row} of split {split!r}")

    def _image_bytes(self, value: Any, where: str) -> bytes:
        if value is None:
            raise MissingImageError(f"{where} has no image (null {self.image_column!r})")
        if isinstance(value, dict):
            if value.get("bytes"):
                return bytes(value["bytes"])
            value = value.get("path")
            if not value:
                raise MissingImageError(f"{where} has no image (neither bytes nor path)")
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        if isinstance(value, str):  # an image stored by path: absolute, or relative to the dataset
            fs, base = fsspec.core.url_to_fs(self.path)
            for candidate in (value, f"{base.rstrip('/')}/{value}"):
                if fs.isfile(candidate):
                    with fs.open(candidate, "rb") as f:
                        return f.read()
            raise MissingImageError(f"{where}: image path {value!r} not found")
        raise TypeError(f"{where}: column {self.image_column!r} holds {type(value).__name__}, not an image")

    def label_map(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.label_names)}

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.registry_name,
            "path": self.path,
            "layout": self.layout,
            "split": self.split,
            "image_column": self.image_column,
            "label_column": self.label_column,
            "revision": self.revision,
        }
