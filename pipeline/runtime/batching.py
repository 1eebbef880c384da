"""How an encoder actor cuts a shard into codec calls, and what it does when a call fails.

- Batches hold samples of one shape, at most `max_samples` of them and at most `max_values` codec-input
  values (a pixel budget): 64 images of 256x256 fit the default budget, 4 of 1024x1024, and one
  sample larger than the budget still goes, alone.
- A batch that runs out of memory (torch.cuda.OutOfMemoryError, MemoryError, a RuntimeError saying
  "out of memory") is retried in halves, down to single samples; only a sample that does not fit on
  its own becomes an error row. Any other failure of a batch falls back to one sample at a time, so
  one bad sample costs its own row, never its batch's.
- Non-finite inputs (NaN/Inf in a float raster or waveform) never reach the codec: they are error
  rows before batching. The codec itself refuses a non-finite float latent before its int8 cast
  (pipeline.codec.model.check_finite), which lands here as that sample's error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def plan_batches(
    samples: Sequence[T], shape_of: Callable[[T], tuple], max_samples: int, max_values: int
) -> list[list[T]]:
    """Equal-shape batches in first-seen order of shapes, each within both limits."""
    groups: dict[tuple, list[T]] = {}
    for s in samples:
        groups.setdefault(tuple(shape_of(s)), []).append(s)
    out = []
    for shape, group in groups.items():
        values = max(1, int(np.prod(shape)))
        n = max(1, min(max_samples, max_values // values))
        out += [group[i : i + n] for i in range(0, len(group), n)]
    return out


def is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, MemoryError):
        return True
    try:
        import torch

        if isinstance(err, torch.cuda.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def _release_memory() -> None:
    """Give the failed call's cached device memory back before the smaller retries."""
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort only
        pass


def _reason(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def encode_robust(encode: Callable[[list[T]], Any], part: list[T]) -> list[tuple[Any, str | None]]:
    """(latent, None) or (None, reason) per sample of `part`, in order; never raises for a sample.

    `encode(samples)` returns latents indexable by position. Out-of-memory: halves, recursively;
    other errors: one sample at a time, each failing sample's own error is its reason."""
    try:
        latents = encode(part)
        return [(latents[i], None) for i in range(len(part))]
    except Exception as err:  # noqa: BLE001 - classified below; per-sample failures never raise
        if is_out_of_memory(err):
            _release_memory()
            if len(part) == 1:
                return [(None, f"out of memory encoding this sample alone ({_reason(err)})")]
            half = len(part) // 2
            return encode_robust(encode, part[:half]) + encode_robust(encode, part[half:])
        if len(part) == 1:
            return [(None, _reason(err))]
    out: list[tuple[Any, str | None]] = []
    for s in part:
        out += encode_robust(encode, [s])
    return out


def nonfinite_reason(array: Any) -> str | None:
    """Why a decoded sample must not be encoded (NaN/Inf values), or None. Integer pixels: free.

    Takes numpy arrays and torch tensors (--decode gpu hands over pixels already on the device)."""
    if hasattr(array, "is_floating_point"):
        import torch

        if not array.is_floating_point() or bool(torch.isfinite(array).all()):
            return None
        nan, inf = int(torch.isnan(array).sum()), int(torch.isinf(array).sum())
    else:
        a = np.asarray(array)
        if not np.issubdtype(a.dtype, np.inexact) or np.isfinite(a).all():
            return None
        nan, inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
    return f"non-finite values in the codec input ({nan} NaN, {inf} Inf)"
