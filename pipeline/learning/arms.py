"""The comparison every three-arm image job makes: which inputs, and the questions asked of them.

latent: the codec's latents of the 256x256 image; pixel: the image at 64x64, as many values as the
latents; full: the image at 256x256, what the codec saw (the ceiling). `comparison` answers the
issue's questions from the per-seed summaries: does resolution matter, how much of that gap the
latents recover, and is each difference beyond the seeds' spread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .data import IMAGE_SIDE, PIXEL_SIDE


@dataclass(frozen=True)
class Arm:
    """One input of the comparison: the codec's latents, or the image at some pixel side."""

    name: str
    domain: Literal["latent", "pixel"]
    side: int  # pixel side (0 for latents: their grid is the codec's)
    about: str


ARMS: dict[str, Arm] = {
    "latent": Arm("latent", "latent", 0, "the codec's latents of the 256x256 image"),
    "pixel": Arm("pixel", "pixel", PIXEL_SIDE, "the image at 64x64: as many values as the latents"),
    "full": Arm("full", "pixel", IMAGE_SIDE, "the image at 256x256, what the codec saw: the ceiling"),
}


def select_arms(names: tuple[str, ...]) -> list[Arm]:
    """The arms to train, in the given order (each at most once)."""
    unknown = [n for n in names if n not in ARMS]
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(f"arms must be distinct names among {sorted(ARMS)}, got {list(names)}")
    return [ARMS[n] for n in names]


def comparison(summary: dict[str, dict[str, float]]) -> dict[str, float | str]:
    """The questions the comparison asks (higher is better): does resolution matter (full vs 64x64
    pixels), how much of that gap the latents recover, and whether each difference is beyond the
    seeds' spread (every seed of one arm above every seed of the other)."""
    out: dict[str, float | str] = {}
    if "full" in summary and "pixel" in summary:
        f, p = summary["full"], summary["pixel"]
        out["gap full - pixel"] = round(f["mean"] - p["mean"], 4)
        out["full beats pixel beyond the spread"] = str(f["min"] > p["max"])
        if "latent" in summary and f["mean"] > p["mean"]:
            lat = summary["latent"]
            out["share of the gap the latents recover"] = round(
                (lat["mean"] - p["mean"]) / (f["mean"] - p["mean"]), 3
            )
    if "latent" in summary and "pixel" in summary:
        lat, p = summary["latent"], summary["pixel"]
        out["gap latent - pixel"] = round(lat["mean"] - p["mean"], 4)
        out["latent beats pixel beyond the spread"] = str(lat["min"] > p["max"])
    return out
