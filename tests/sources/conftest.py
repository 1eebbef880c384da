"""The `build` fixture: a small real input for a source kind (see source_builders.SOURCE_CASES)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from source_builders import SOURCE_CASES

# nothing here may reach the network: make the Hugging Face libraries fail fast instead of trying
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture
def build():
    """build(name, tmp_path) -> (path, options) for a source kind."""

    def make(name: str, root: Path) -> tuple[str, dict[str, Any]]:
        if name not in SOURCE_CASES:
            pytest.fail(
                f"source {name!r} has no contract case: add a builder to tests/sources/source_builders.py"
            )
        return SOURCE_CASES[name](root)

    return make
