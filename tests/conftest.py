"""Shared fixtures: conformance vectors from the reference implementation (walloc 1.2.1), one local Ray."""

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


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for every in-process run of the session (`address="local"`: never join a
    cluster that someone else started on this machine). Its value is the cluster's address, for job
    subprocesses that join it."""
    import ray

    if ray.is_initialized():  # another suite's fixture started one: share it, leave it running
        yield ray.get_runtime_context().gcs_address
        return
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level="WARNING",
        configure_logging=False,
    )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
