"""Shared fixtures: conformance vectors from the reference implementation (walloc 1.2.1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

ASSETS = Path(__file__).parent / "assets"
CONFORMANCE = ASSETS / "conformance"
VECTOR_NAMES = sorted(p.stem for p in CONFORMANCE.glob("*.pt"))


def load_vector(name: str) -> dict:
    d = torch.load(CONFORMANCE / f"{name}.pt", weights_only=True)
    d["config"] = json.loads(d["config"])
    return d


@pytest.fixture(params=VECTOR_NAMES)
def vector(request) -> dict:
    return load_vector(request.param)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
