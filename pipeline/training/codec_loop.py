"""The training loop: the reference recipe (walloc's train_rgb / train_stereo notebooks), resumable.

    loss = MSE(x, x_hat) in the signal domain, x_hat unclamped, uniform noise in the bottleneck
    AdamW; the learning rate rises from min_lr to lr along a cosine in log space (warmup_steps),
    then (schedule="cosine", the default) falls along a half cosine to lr * lr_floor at the last
    step, or (schedule="plateau", the reference's) ReduceLROnPlateau on the smoothed log10 loss

The reference trains ~10^6 steps at lr 3e-5 on GPUs; on a few CPU cores we run thousands, so the
defaults below raise the learning rate and shorten warmup and patience (same shape, other scale).
The plateau schedule is kept for the reference's recipe, but on short CPU runs its reductions fire
on noise (rgb-16x's first run: 3e-4 to 1e-6 in 13,400 steps, long before the loss stopped falling);
the cosine spends the whole budget at a useful rate and only anneals at the end. Its lr at step s
is a pure function of (s, config), so a resumed run follows the same curve; raising --steps on a
resume stretches the rest of the curve to the new end.

A checkpoint (`<dir>/last.pt`, written atomically every ckpt_every steps and at the end) holds the
model, optimizer, both schedulers, the step, the loss history, wall time and the RNG state of every
rank. Data depends only on the step (see data.StepBatches), and validation draws no random
numbers, so resuming reproduces an uninterrupted run exactly.

Single process by default; `train_ray` runs the same loop data-parallel under Ray Train.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from pipeline.codec import WaLLoC

from ..metrics import psnr
from .codec_data import StepBatches

CHECKPOINT = "last.pt"
LOG = "log.jsonl"


@dataclass
class CodecTrainConfig:
    steps: int = 4000  # optimizer steps in total (a resumed run continues up to this)
    batch_size: int = 16  # per worker
    lr: float = 5e-4  # peak learning rate (reference: 3e-5 at batch 64 over ~1M GPU steps)
    min_lr: float = 1e-6  # warmup starts here; the plateau schedule never goes below it
    warmup_steps: int = 300  # log-cosine warmup from min_lr to lr
    schedule: Literal["cosine", "plateau"] = "cosine"  # after warmup: cosine to the floor, or plateau
    lr_floor: float = 0.05  # cosine: the lr ends at lr * lr_floor (never below min_lr)
    weight_decay: float = 0.0  # AdamW weight decay (reference: 0)
    plateau_every: int = 50  # plateau: steps per smoothed-loss point fed to ReduceLROnPlateau
    plateau_patience: int = 8  # plateau: points without improvement before the lr drops
    plateau_factor: float = 0.7  # plateau: lr multiplier on a plateau (reference: 0.98 with patience 64)
    grad_clip: float = 0.0  # max grad norm; 0 = no clipping (as the reference)
    val_every: int = 250  # steps between validation PSNR evaluations
    ckpt_every: int = 250  # steps between checkpoints
    num_workers: int = 0  # DataLoader worker processes (0: decode in the training process)
    seed: int = 0  # seeds data (with the sample index) and the bottleneck noise
    device: str = "auto"  # "auto": cuda when available, else cpu


@dataclass
class CodecTrainResult:
    step: int  # steps completed
    wall_s: float  # training wall time, summed over resumed runs
    losses: list[float] = field(default_factory=list)  # training loss per step (rank-averaged)
    val_psnr: list[tuple[int, float]] = field(default_factory=list)  # (step, dB) on the valid batch

    @property
    def final_psnr(self) -> float | None:
        return self.val_psnr[-1][1] if self.val_psnr else None


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def log_cosine_warmup(step: int, cfg: CodecTrainConfig) -> float:
    """LambdaLR factor: lr goes from min_lr to lr along half a cosine, in log10 space."""
    t = min(step, cfg.warmup_steps) / max(1, cfg.warmup_steps)
    lo, hi = math.log10(cfg.min_lr), math.log10(cfg.lr)
    return 10 ** (lo + (hi - lo) * 0.5 * (1 - math.cos(math.pi * t))) / cfg.lr


def lr_factor(step: int, cfg: CodecTrainConfig) -> float:
    """LambdaLR factor at `step`: the warmup, then (cosine) a half cosine from 1 to the floor at
    cfg.steps, or (plateau) 1, which ReduceLROnPlateau then scales down on its own."""
    if step < cfg.warmup_steps:
        return log_cosine_warmup(step, cfg)
    if cfg.schedule == "plateau":
        return 1.0
    floor = max(cfg.lr_floor, cfg.min_lr / cfg.lr)
    t = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


@torch.no_grad()
def validate(codec: WaLLoC, x: Tensor, chunk: int = 8) -> float:
    """PSNR of the rounded (eval-mode) reconstruction of a fixed batch. Draws no random numbers."""
    was_training = codec.training
    codec.eval()
    out = torch.cat([codec(c)["x_hat"].clamp(-0.5, 0.5) for c in x.split(chunk)])
    codec.train(was_training)
    return psnr(out, x)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _mean_over_ranks(value: float, device: torch.device) -> float:
    if _world()[1] == 1:
        return value
    t = torch.tensor([value], device=device, dtype=torch.float64)
    dist.all_reduce(t)
    return t.item() / _world()[1]


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic write: a crash mid-save leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def train(
    codec: WaLLoC,
    data: Dataset,
    valid: Tensor,
    cfg: CodecTrainConfig,
    ckpt_dir: str | Path | None = None,
    *,
    resume: bool = True,
    model: nn.Module | None = None,
    progress: bool = True,
    stop_at: int | None = None,
) -> CodecTrainResult:
    """Train `codec` in place up to cfg.steps; returns the history. With `ckpt_dir`, checkpoints
    there and (if `resume`) continues from its last checkpoint. `model` is a wrapper of `codec`
    (DistributedDataParallel) to run forward/backward through; the weights are `codec`'s.
    `stop_at` ends this session at that step (checkpointed) with the schedule still aimed at
    cfg.steps: a long run split over sessions, which a later call resumes exactly."""
    rank, world = _world()
    device = pick_device(cfg.device) if model is None else next(codec.parameters()).device
    codec.to(device).train()
    model = model or codec
    valid = valid.to(device)
    ckpt_path = Path(ckpt_dir) / CHECKPOINT if ckpt_dir is not None else None
    if ckpt_dir is not None and rank == 0:
        Path(ckpt_dir).mkdir(parents=True, exist_ok=True)

    optimizer = torch.optim.AdamW(codec.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=cfg.plateau_factor, patience=cfg.plateau_patience, threshold=1e-5, min_lr=cfg.min_lr
    )
    result = CodecTrainResult(step=0, wall_s=0.0)
    torch.manual_seed(cfg.seed * 1000 + rank)  # bottleneck noise; replaced by the checkpoint's state
    if ckpt_path is not None and resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        codec.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        warmup.load_state_dict(state["warmup"])
        plateau.load_state_dict(state["plateau"])
        result = CodecTrainResult(
            step=state["step"],
            wall_s=state["wall_s"],
            losses=list(state["losses"]),
            val_psnr=[tuple(v) for v in state["val_psnr"]],
        )
        rng = state["rng"]
        if len(rng) == world:  # a different world size cannot replay the same noise anyway
            torch.set_rng_state(rng[rank]["cpu"])
            if "cuda" in rng[rank] and device.type == "cuda":
                torch.cuda.set_rng_state(rng[rank]["cuda"], device)

    def checkpoint() -> None:
        rng = {"cpu": torch.get_rng_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        rngs = [rng]
        if world > 1:
            rngs = [None] * world
            dist.all_gather_object(rngs, rng)
        if rank == 0 and ckpt_path is not None:
            save_checkpoint(
                ckpt_path,
                {
                    "model": codec.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "warmup": warmup.state_dict(),
                    "plateau": plateau.state_dict(),
                    "step": result.step,
                    "wall_s": result.wall_s,
                    "losses": result.losses,
                    "val_psnr": [list(v) for v in result.val_psnr],
                    "rng": rngs,
                    "config": asdict(cfg),
                },
            )

    def log(entry: dict) -> None:
        if rank == 0 and ckpt_dir is not None:
            with open(Path(ckpt_dir) / LOG, "a") as f:
                f.write(json.dumps(entry) + "\n")

    end = cfg.steps if stop_at is None else max(result.step, min(stop_at, cfg.steps))
    loader = DataLoader(
        data,
        batch_sampler=StepBatches(cfg.batch_size, result.step, end, rank, world),
        num_workers=cfg.num_workers,
        generator=torch.Generator().manual_seed(cfg.seed),  # keeps the global RNG untouched
        persistent_workers=False,
    )
    bar = tqdm(
        total=cfg.steps,
        initial=result.step,
        disable=not progress or rank != 0,
        desc="train",
        mininterval=0.1 if sys.stderr.isatty() else 10.0,  # log files get a line every 10 s
    )
    t0 = time.perf_counter()
    for x in loader:
        x = x.to(device, non_blocking=True)
        loss = F.mse_loss(model(x)["x_hat"], x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(codec.parameters(), cfg.grad_clip)
        optimizer.step()
        result.step += 1
        result.losses.append(_mean_over_ranks(loss.item(), device))
        if result.step <= cfg.warmup_steps or cfg.schedule == "cosine":
            warmup.step()
        elif result.step % cfg.plateau_every == 0:
            recent = result.losses[-cfg.plateau_every :]
            plateau.step(sum(math.log10(max(v, 1e-20)) for v in recent) / len(recent))
        done = result.step == cfg.steps  # not `end`: a session's history equals an uninterrupted run's
        if result.step % cfg.val_every == 0 or done:
            result.val_psnr.append((result.step, validate(codec, valid)))
        lr = optimizer.param_groups[0]["lr"]
        now = time.perf_counter()
        result.wall_s, t0 = result.wall_s + now - t0, now
        if result.step % cfg.val_every == 0 or done:
            log({"step": result.step, "loss": result.losses[-1], "lr": lr, "val_psnr": result.val_psnr[-1][1],
                 "wall_s": round(result.wall_s, 1)})  # fmt: skip
        if result.step % cfg.ckpt_every == 0 or result.step == end:
            checkpoint()
        post = {"loss": f"{result.losses[-1]:.3g}", "lr": f"{lr:.2g}"}
        if result.val_psnr:
            post["psnr"] = f"{result.val_psnr[-1][1]:.2f}"
        bar.set_postfix(post, refresh=False)
        bar.update(1)
    bar.close()
    return result


# --- Ray Train (data parallel) ------------------------------------------------------------------
SetupFn = Callable[[], tuple[WaLLoC, Dataset, Tensor]]  # builds (codec, train data, valid batch)


def _ray_worker(config: dict) -> None:
    import ray.train
    import ray.train.torch

    codec, data, valid = config["setup"]()
    cfg: CodecTrainConfig = config["cfg"]
    codec.to(ray.train.torch.get_device())
    model = ray.train.torch.prepare_model(codec)  # DistributedDataParallel around the same modules
    result = train(codec, data, valid, cfg, config["ckpt_dir"], model=model)
    ray.train.report({"step": result.step, "val_psnr": result.final_psnr or float("nan")})


def train_ray(
    setup: SetupFn, cfg: CodecTrainConfig, ckpt_dir: str | Path, *, workers: int, address: str | None = None
) -> None:
    """Run `train` on `workers` Ray Train workers (DDP, gloo on CPU / nccl on GPU). `setup` must be
    picklable and build the same codec and data on every worker; rank 0 writes `ckpt_dir/last.pt`
    (a path every worker can reach), from which the caller loads the result."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ckpt_dir = Path(ckpt_dir).resolve()
    if not ray.is_initialized():
        ray.init(
            address=address or "local", include_dashboard=False
        )  # "local": never join a stranger's cluster
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config={"setup": setup, "cfg": cfg, "ckpt_dir": str(ckpt_dir)},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=torch.cuda.is_available()),
        run_config=RunConfig(
            name="train_codec",
            storage_path=str(ckpt_dir / "ray"),
            failure_config=FailureConfig(max_failures=0),  # rerun the job instead: it resumes from last.pt
        ),
    )
    trainer.fit()
