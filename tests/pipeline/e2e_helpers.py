"""Helpers for the end-to-end pipeline tests: run settings, and readers built on the stock libraries.

Reading outputs back deliberately uses only webdataset / zarr / pyarrow / jsonschema / numpy (never
pipeline.loaders), so the tests check the on-disk formats that a user without this project sees.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pyarrow.parquet as pq
import webdataset as wds

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "schemas"
JOB = REPO / "jobs" / "encode_imagenet.py"
SAMPLE_IMAGES = REPO / "pipeline" / "samples" / "images" / "train"

# The settings every "standard" run uses (in-process, job subprocess and `ray job submit` alike), so
# that their outputs can be compared byte for byte.
SIZE = 64  # small images keep the runs short; the codec (J=3) gives 8x8 latents
SHARD_SIZE = 4


def standard_args(corpus: Path, output: Path, codec: Path) -> list[str]:
    """The job's command line for a standard run."""
    return [
        "--input",
        str(corpus),
        "--output",
        str(output),
        "--codec",
        str(codec),
        "--size",
        str(SIZE),
        "--shard-size",
        str(SHARD_SIZE),
        "--no-progress",
    ]


def job_command(corpus: Path, output: Path, codec: Path, *extra: str) -> list[str]:
    return [sys.executable, str(JOB), *standard_args(corpus, output, codec), *extra]


def encode(
    corpus: Path,
    output: Path,
    codec: Path,
    *,
    sink: dict[str, Any] | None = None,
    image: dict[str, Any] | None = None,
    ray: dict[str, Any] | None = None,
    **top: Any,
):
    """A standard run in this process (on the session's Ray). `sink`, `image`, `ray`: the fields of
    those parts of EncodeConfig that differ from the standard run's; `top`: its own fields (mode...)."""
    from pipeline.config import EncodeConfig
    from pipeline.runtime import run_encode

    settings: dict[str, Any] = {
        "input": str(corpus),
        "codec": str(codec),
        "progress": False,
        "sink": {"output": str(output), "shard_size": SHARD_SIZE} | (sink or {}),
        "image": {"size": SIZE} | (image or {}),
        "ray": ray or {},
        **top,
    }
    return run_encode(EncodeConfig.from_dict(settings))


def run_job(argv: list[str]) -> int:
    """The image job's main() in this process (it finds this session's Ray already running)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("encode_imagenet_job", JOB)
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    return job.main(argv)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def schema(name: str) -> dict:
    return json.loads((SCHEMAS / name).read_text())


def read_manifest(output: Path) -> dict:
    manifest = json.loads((output / "manifest.json").read_text())
    jsonschema.validate(manifest, schema("manifest.schema.json"))
    return manifest


def read_errors(output: Path) -> list[dict]:
    return pq.read_table(output / "errors.parquet").to_pylist()


def shard_urls(output: Path) -> list[str]:
    return [str(p) for p in sorted(output.glob("shard-*.tar"))]


def read_webdataset(output: Path) -> list[dict]:
    """Every sample of every shard, with webdataset's default decoders (.npy, .cls, .json)."""
    urls = shard_urls(output)
    assert urls, f"no shards in {output}"
    return list(wds.WebDataset(urls, shardshuffle=False).decode())


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Relative path -> content of every file under root."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_same_tree(a: Path, b: Path) -> None:
    """Two outputs hold the same files with the same bytes."""
    ta, tb = tree_bytes(a), tree_bytes(b)
    assert sorted(ta) == sorted(tb), f"different files: {sorted(set(ta) ^ set(tb))}"
    differ = [name for name in ta if ta[name] != tb[name]]
    assert not differ, f"files differ between {a} and {b}: {differ}"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two float arrays in [-0.5, 0.5] (peak 1)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def uri_to_path(uri: str) -> Path:
    assert uri.startswith("file://"), uri
    return Path(uri[len("file://") :])


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height RGB pixels, with no pixel data at all."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")
