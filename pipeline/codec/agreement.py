"""Do two devices give the same latents for the same input? (GPU encoder vs the CPU encoder.)

Latents are round(companded value): a different summation order on another device moves the value
by a few ulps, which flips the rounding only when the value sits within a hair of k + 0.5. So a
mismatch at such a rounding boundary is expected and counted apart; any other mismatch is a bug.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

import torch

BOUNDARY = 1e-3  # |companded - (k + 0.5)| below this: a tie that summation order may flip


@dataclass(frozen=True)
class Agreement:
    latents: int
    mismatches: int
    boundary_mismatches: int  # at a rounding tie of the reference (allowed)
    max_abs_diff: int

    @property
    def mismatch_rate(self) -> float:
        return self.mismatches / max(self.latents, 1)

    @property
    def other_mismatches(self) -> int:
        return self.mismatches - self.boundary_mismatches

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"mismatch_rate": self.mismatch_rate, "other_mismatches": self.other_mismatches}

    def format(self) -> str:
        return (
            f"{self.mismatches} of {self.latents} latents differ ({self.mismatch_rate:.2e}): "
            f"{self.boundary_mismatches} at rounding ties, {self.other_mismatches} elsewhere; "
            f"max |diff| {self.max_abs_diff}"
        )


@torch.no_grad()
def compare_latents(reference: torch.Tensor, other: torch.Tensor, companded: torch.Tensor) -> Agreement:
    """Count differing int8 latents; `companded` is the reference's value before rounding."""
    reference, other, companded = reference.cpu(), other.cpu(), companded.cpu()
    diff = (reference.to(torch.int16) - other.to(torch.int16)).abs()
    mismatch = diff > 0
    tie = (companded - companded.floor() - 0.5).abs() < BOUNDARY
    return Agreement(
        latents=mismatch.numel(),
        mismatches=int(mismatch.sum()),
        boundary_mismatches=int((mismatch & tie).sum()),
        max_abs_diff=int(diff.max()) if diff.numel() else 0,
    )


@torch.no_grad()
def device_agreement(codec, x: torch.Tensor, device: str, reference_device: str = "cpu") -> Agreement:
    """Encode x (B, C, ...) in [-0.5, 0.5] on `device` and on `reference_device`; compare the latents."""
    ref = copy.deepcopy(codec).to(reference_device).eval()
    dev = copy.deepcopy(codec).to(device).eval()
    x_ref = x.to(reference_device)
    z_ref = ref.encode(x_ref)
    z_dev = dev.encode(x.to(device))
    companded = ref.compander.to_uniform(ref.encode_continuous(ref.pad(x_ref)))
    return compare_latents(z_ref, z_dev, companded)
