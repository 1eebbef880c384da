"""The training loop both arms share: same optimizer, schedule, batches and seed.

Data are held as tensors (built once from the shards / the pixel pipeline; loading speed is what
benchmarks/loader_throughput.py measures), so `samples_per_s` here is the training step itself:
forward, backward and optimizer step, host-to-device copies included, evaluation excluded,
measured by `interleaved_speed` after training so that both arms see the same machine load.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .measure import PeakMemory, step_tensor_bytes
from .models import count_parameters


@dataclass(frozen=True)
class LearnConfig:
    epochs: int = 6
    batch_size: int = 32
    lr: float = 2e-3  # AdamW, cosine decay to 0 over the run
    weight_decay: float = 1e-4
    seed: int = 0
    progress: bool = True


@dataclass
class ArmResult:
    """One arm (latent or pixel): its learning curve, final metrics, speed and memory."""

    name: str
    input_shape: list[int]
    params: int
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch: train_loss + eval metrics
    final: dict[str, float] = field(default_factory=dict)
    samples_per_s: float = 0.0  # training step, interleaved with the other arm (interleaved_speed)
    epoch_samples_per_s: float = 0.0  # median epoch while training (load of the moment)
    train_seconds: float = 0.0
    memory: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def train_arm(
    name: str,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    evaluate: Callable[[nn.Module], dict[str, float]],
    cfg: LearnConfig,
    device: torch.device,
) -> ArmResult:
    """Train `model` on (x, y) for cfg.epochs, calling `evaluate(model)` (eval mode, no grad) after each."""
    gen = torch.Generator().manual_seed(cfg.seed)

    def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            yield x[idx], y[idx]

    steps = max(1, -(-len(x) // cfg.batch_size))
    k = min(cfg.batch_size, len(x))
    return train_stream(name, model, batches, steps, (x[:k], y[:k]), loss_fn, evaluate, cfg, device)


def train_stream(
    name: str,
    model: nn.Module,
    batches: Callable[[int], Iterable[tuple[Tensor, Tensor]]],
    steps_per_epoch: int,
    example: tuple[Tensor, Tensor],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    evaluate: Callable[[nn.Module], dict[str, float]],
    cfg: LearnConfig,
    device: torch.device,
) -> ArmResult:
    """train_arm over batches that come from elsewhere (e.g. a shuffled latent loader): `batches(epoch)`
    yields (x, y) batches of one epoch, `steps_per_epoch` sizes the cosine schedule, `example` (one
    batch) gives the input shape and the step's tensor bytes. The epoch rates include the loading."""
    torch.manual_seed(cfg.seed)
    model = model.to(device)
    x0, y0 = example
    result = ArmResult(name=name, input_shape=list(x0.shape[1:]), params=count_parameters(model))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * max(1, steps_per_epoch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    seen, busy, rates = 0, 0.0, []
    model.train()
    step_bytes = step_tensor_bytes(model, x0.to(device), y0.to(device), loss_fn)
    bar = tqdm(total=steps, desc=f"{name:>6}", disable=not cfg.progress, leave=False)
    with PeakMemory(device) as mem:
        for epoch in range(cfg.epochs):
            model.train()
            total, count = 0.0, 0
            t0 = time.perf_counter()
            for xb, yb in batches(epoch):
                if len(xb) < 2:  # BatchNorm needs two samples
                    continue
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                loss = loss_fn(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(xb)
                count += len(xb)
                bar.update(1)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            busy += time.perf_counter() - t0
            seen += count
            rates.append(count / max(time.perf_counter() - t0, 1e-9))
            model.eval()
            with torch.no_grad():
                metrics = evaluate(model)
            result.history.append({"epoch": epoch + 1, "train_loss": total / max(count, 1), **metrics})
            bar.set_postfix(loss=f"{total / max(count, 1):.4f}")
    bar.close()
    result.final = {k: v for k, v in result.history[-1].items() if k not in ("epoch",)}
    # median epoch: one busy spell of the shared machine should not decide the figure
    result.epoch_samples_per_s = float(sorted(rates)[len(rates) // 2]) if rates else 0.0
    result.samples_per_s = result.epoch_samples_per_s  # until interleaved_speed replaces it
    result.train_seconds = busy
    result.memory = (mem.reading.to_dict() if mem.reading else {}) | {
        "step_tensors_mb": round(step_bytes / 2**20, 1),
        "step_tensors_batch": len(x0),
    }
    return result


def interleaved_speed(
    arms: dict[str, tuple[nn.Module, Tensor, Tensor]],
    loss_fn: Callable[[Tensor, Tensor], Tensor] | dict[str, Callable[[Tensor, Tensor], Tensor]],
    cfg: LearnConfig,
    device: torch.device,
    steps: int = 4,
    rounds: int = 3,
) -> dict[str, float]:
    """Training-step samples/s of each arm, measured in alternating rounds (median per arm).

    The arms train one after the other, so on a machine shared with other jobs their epoch timings
    see different loads; alternating short rounds on copies of the trained models puts both arms
    under the same load. Same batch size, optimizer and step as training; `loss_fn` is one loss for
    every arm or each arm's own, by name."""
    import copy

    losses = loss_fn if isinstance(loss_fn, dict) else {name: loss_fn for name in arms}

    rates: dict[str, list[float]] = {name: [] for name in arms}
    state = {}
    for name, (model, x, y) in arms.items():
        m = copy.deepcopy(model).to(device).train()
        state[name] = (m, torch.optim.AdamW(m.parameters(), lr=cfg.lr), x, y)
    gen = torch.Generator().manual_seed(cfg.seed)
    for _ in range(rounds):
        for name, (m, opt, x, y) in state.items():
            idx = [torch.randint(len(x), (min(cfg.batch_size, len(x)),), generator=gen) for _ in range(steps)]
            t0 = time.perf_counter()
            for i in idx:
                loss = losses[name](m(x[i].to(device)), y[i].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            rates[name].append(sum(len(i) for i in idx) / (time.perf_counter() - t0))
    return {name: float(sorted(r)[len(r) // 2]) for name, r in rates.items()}


def weighted_mse(weights: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """MSE with a weight per channel (dim 1, any number of trailing dims): on standardized latents,
    std^2 / mean(std^2) makes the loss proportional to the unstandardized error, i.e. to the error in
    the signal the codec decodes it to (pixels, waveform)."""
    w = (weights / weights.mean()).flatten()

    def loss(pred: Tensor, target: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (pred.ndim - 2)
        return ((pred - target) ** 2 * w.to(pred.device).view(shape)).mean()

    return loss


def predict(model: nn.Module, x: Tensor, device: torch.device, batch_size: int = 64) -> Tensor:
    """Model outputs for x in eval mode, batched, back on the CPU."""
    model.eval()
    outs = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            outs.append(model(x[start : start + batch_size].to(device)).float().cpu())
    return torch.cat(outs)
