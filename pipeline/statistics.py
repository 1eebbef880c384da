"""Per-channel statistics of quantized latents, kept as integer histograms so that they merge exactly.

Each shard counts its latents per channel into 2^bits bins (bin i holds value i - 2^(bits-1)); the
manifest sums the shards' histograms (integer sums: any merge order, any number of workers, append
runs included, gives the same result) and derives everything else from the merged counts: count,
mean, std, min, max of the raw integers, and mean/std of the dequantized values
(Compander(bits).to_normal of each integer), which is what a model trained on floats sees.
Histograms only count values, so variable latent shapes (crop none, buckets, audio) merge the same.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def offset(bits: int) -> int:
    """Value of bin 0: -(2^(bits-1))."""
    return -(1 << (bits - 1))


def latent_histogram(latent: np.ndarray, bits: int) -> np.ndarray:
    """(C, 2^bits) int64 counts of one latent (C, ...) or a batch stacked on axis 0 per channel.

    Values outside the bit range raise: they would mean a latent that is not what the codec emits."""
    z = np.asarray(latent)
    channels, bins = z.shape[0], 1 << bits
    flat = z.reshape(channels, -1).astype(np.int64) - offset(bits)
    if flat.size and (flat.min() < 0 or flat.max() >= bins):
        raise ValueError(f"latent values outside [{offset(bits)}, {bins + offset(bits) - 1}]")
    flat += np.arange(channels, dtype=np.int64)[:, None] * bins
    return np.bincount(flat.ravel(), minlength=channels * bins).reshape(channels, bins)


class HistogramAccumulator:
    """Sums the histograms of the latents of one shard (or of a whole run)."""

    def __init__(self, bits: int):
        self.bits = bits
        self.samples = 0
        self.histogram: np.ndarray | None = None  # (C, 2^bits) int64

    def add(self, latent: np.ndarray, stacked: bool = False) -> None:
        """Count one sample's latent (C, ...); stacked: (S, C, ...), the latents of one sample's
        grouped signals (MUSDB stems), counted per channel over all of them, as one sample."""
        z = np.asarray(latent)
        if stacked:
            z = np.moveaxis(z, 0, 1)
        h = latent_histogram(z, self.bits)
        if self.histogram is not None and self.histogram.shape != h.shape:
            raise ValueError(f"latent has {h.shape[0]} channels, earlier ones {self.histogram.shape[0]}")
        self.histogram = h if self.histogram is None else self.histogram + h
        self.samples += 1

    def merge(self, part: dict[str, Any] | None, sign: int = 1) -> None:
        """Add (sign=-1: take away) a to_dict() of another accumulator (a shard marker's `statistics`)."""
        if not part or not part.get("samples"):
            return
        if part["bits"] != self.bits:
            raise ValueError(f"cannot merge {part['bits']}-bit histograms into {self.bits}-bit ones")
        h = np.asarray(part["histogram"], dtype=np.int64)
        if self.histogram is not None and self.histogram.shape != h.shape:
            raise ValueError(f"histograms of {h.shape[0]} and {self.histogram.shape[0]} channels")
        self.histogram = sign * h if self.histogram is None else self.histogram + sign * h
        self.samples += sign * int(part["samples"])
        if self.samples < 0 or self.histogram.min() < 0:
            raise ValueError("took away more latents than were counted")

    def to_dict(self) -> dict[str, Any]:
        """What a shard marker stores: plain ints, exact."""
        hist = [] if self.histogram is None else self.histogram.tolist()
        return {"bits": self.bits, "samples": self.samples, "histogram": hist}

    def summary(self) -> dict[str, Any] | None:
        """The manifest's `statistics` (None before any latent was counted)."""
        if self.histogram is None:
            return None
        return summarize(self.histogram, self.samples, self.bits)


def dequantized_values(bits: int) -> np.ndarray:
    """to_normal of each bin's integer value (float64), through the codec's own compander."""
    import torch

    from .codec.bottleneck import Compander

    values = torch.arange(offset(bits), offset(bits) + (1 << bits), dtype=torch.float64)
    return Compander(bits).to_normal(values).numpy()


def _moments(hist: np.ndarray, values: np.ndarray, positions: np.ndarray) -> tuple[list, list]:
    n = np.maximum(positions, 1)[:, None]
    mean = (hist * values[None, :]).sum(axis=1, keepdims=True) / n
    var = (hist * (values[None, :] - mean) ** 2).sum(axis=1) / n[:, 0]
    return mean[:, 0].tolist(), np.sqrt(var).tolist()


def summarize(histogram: np.ndarray, samples: int, bits: int) -> dict[str, Any]:
    """count, channels, positions, the histogram and the moments derived from it (per channel)."""
    hist = np.asarray(histogram, dtype=np.int64)
    positions = hist.sum(axis=1)
    raw = np.arange(offset(bits), offset(bits) + (1 << bits), dtype=np.float64)
    mean, std = _moments(hist, raw, positions)
    dq_mean, dq_std = _moments(hist, dequantized_values(bits), positions)
    nonzero = [np.flatnonzero(row) for row in hist]
    return {
        "count": int(samples),
        "channels": int(hist.shape[0]),
        "positions": int(positions.max()) if positions.size else 0,  # the same for every channel
        "histogram_offset": offset(bits),
        "histogram": hist.tolist(),
        "mean": mean,
        "std": std,
        "min": [int(nz[0]) + offset(bits) if nz.size else None for nz in nonzero],
        "max": [int(nz[-1]) + offset(bits) if nz.size else None for nz in nonzero],
        "dequantized_mean": dq_mean,
        "dequantized_std": dq_std,
    }


def merge_statistics(
    parts: list[dict[str, Any] | None], bits: int, minus: list[dict[str, Any] | None] = ()
) -> dict[str, Any] | None:
    """The run's statistics from the shards' marker entries (None entries: shards with no latents),
    less the `minus` ones (latents superseded by an append run)."""
    acc = HistogramAccumulator(bits)
    for part in parts:
        acc.merge(part)
    for part in minus:
        acc.merge(part, sign=-1)
    return acc.summary()
