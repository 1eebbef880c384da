"""Device choice, peak memory and throughput of one training arm.

Peak memory: on CUDA, torch.cuda.max_memory_allocated (tensors only, reset per arm). On CPU, the
process's peak resident set (VmHWM in /proc/self/status), reset per arm by writing 5 to
/proc/self/clear_refs, so each arm reports its own peak although both run in one process
(ru_maxrss cannot be reset and tracemalloc does not see torch's allocator). The CPU figure is the
whole process's RSS (Python, torch, the data held in memory), so compare arms by their difference
to the RSS at the start of the arm (`growth`), which is also reported.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass
from pathlib import Path

import torch


def pick_device(name: str = "auto") -> torch.device:
    """auto: CUDA when available, else CPU; 'cuda' without a GPU is an error that says so."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is visible (use --device cpu or auto)")
    return torch.device(name)


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class MemoryReading:
    peak_bytes: int
    start_bytes: int
    kind: str  # what peak_bytes measures

    @property
    def growth_bytes(self) -> int:
        return max(0, self.peak_bytes - self.start_bytes)

    def to_dict(self) -> dict:
        return {
            "peak_mb": round(self.peak_bytes / 2**20, 1),
            "growth_mb": round(self.growth_bytes / 2**20, 1),
            "kind": self.kind,
        }


class PeakMemory:
    """Context manager: peak memory of the code inside it (see the module docstring for what it is)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reading: MemoryReading | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            self._reset_ok = _reset_hwm()
            self._start = (_status_kib("VmRSS") or 0) * 1024
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak, kind = torch.cuda.max_memory_allocated(self.device), "torch.cuda.max_memory_allocated"
        elif self._reset_ok and _status_kib("VmHWM") is not None:
            peak, kind = (_status_kib("VmHWM") or 0) * 1024, "CPU peak RSS (VmHWM, reset per arm)"
        else:  # no /proc (macOS) or no reset: the process-wide ru_maxrss, not separable per arm
            scale = 1 if sys.platform == "darwin" else 1024
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
            kind = "CPU ru_maxrss (process-wide, not reset per arm)"
        self.reading = MemoryReading(peak_bytes=peak, start_bytes=self._start, kind=kind)


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def step_tensor_bytes(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn) -> int:
    """Tensor memory one training step holds at its peak, counted, not sampled: parameters, their
    gradients, AdamW's two moments, the batch, and every tensor autograd saves for backward
    (saved_tensors_hooks, storages counted once). Device- and allocator-independent, so the arms'
    figures compare on a CPU shared with other jobs, where RSS does not."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    params = sum(p.numel() * p.element_size() for p in model.parameters())
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn(model(x), y)
    loss.backward()
    model.zero_grad(set_to_none=True)
    batch = x.numel() * x.element_size() + y.numel() * y.element_size()
    return 4 * params + batch + sum(seen.values())
