"""Load the on-disk format schemas from `schemas/` (their single home) and validate against them.

The package reads them as `pipeline/_schemas/`: in a checkout a symlink to `../schemas`, in a wheel
(and so in `pip install .`) the files themselves, copied by the build as package data."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
import pyarrow as pa

SCHEMA_DIR = Path(__file__).resolve().parent / "_schemas"


class SchemaError(ValueError):
    """A manifest or metadata document that does not match its schema."""


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    path = SCHEMA_DIR / name
    if not path.exists():
        raise FileNotFoundError(f"schema {name} not found in {SCHEMA_DIR}")
    return json.loads(path.read_text())


@functools.cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    """A compiled validator per schema (the schema is checked once, not at every document)."""
    schema = load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def validate(document: Any, name: str, what: str = "document") -> None:
    """Raise SchemaError naming the first violation."""
    err = jsonschema.exceptions.best_match(_validator(name).iter_errors(document))
    if err is not None:
        where = "/".join(str(p) for p in err.absolute_path) or "(root)"
        raise SchemaError(f"{what} does not match {name} at {where}: {err.message}")


_ARROW_TYPES = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_()}


def arrow_schema(name: str) -> pa.Schema:
    """An Arrow schema from a schemas/*.json file holding an `arrow_schema` field list."""
    fields = load_schema(name)["arrow_schema"]
    return pa.schema([pa.field(f["name"], _ARROW_TYPES[f["type"]], nullable=f["nullable"]) for f in fields])
