"""--dry-run: what a run would do, worked out with the run's own code, without writing anything.

Why: on a cluster a wrong --mode or --output costs hours of GPU time or overwrites a dataset. The
dry run lists the inputs, loads the codec, asks plan_run (write=False) what each --mode would encode
or refuse, sizes the encoder pool from the cluster's resources exactly as the run does, and
estimates the output size. It never writes to the output (no lease, no _run.json).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

from ..config import EncodeConfig
from ..formats import output_format
from ..preprocess.factory import latent_shape_of
from . import ray_exec
from .driver import Prepared, prepare_run, worker_plan
from .lease import read_lease
from .plan import OutputConflictError, plan_run

MODES = ("resume", "append", "overwrite")


@dataclass(frozen=True)
class ModePlan:
    encode_shards: int
    skip_shards: int
    encode_inputs: int
    refused: str | None = None  # the OutputConflictError the run would raise


@dataclass(frozen=True)
class WorkerPlan:
    encoders: int
    threads: int
    device: str
    cpus: float
    gpus: float
    resources_from: str  # "Ray cluster at <address>" or "this machine (no --address)"
    error: str | None = None
    decoding: str = "on CPUs"  # --decode gpu: "in the encoder actors, on their device"


@dataclass
class PlanReport:
    """The dry run's answer; format() prints it, ok says whether the selected --mode would start."""

    input: str
    output: str
    source: dict[str, Any]
    inputs: int
    mode: str
    modes: dict[str, ModePlan]
    codec: str
    latent_shape: tuple[int, ...] | None
    latent_bytes_per_sample: float
    bytes_per_sample: float  # latent + container overhead (upper bound for entropy-coded latents)
    shard_size: int
    format: str
    latent_format: str
    workers: WorkerPlan
    lease: str | None  # a lease currently on the output (a run would fail if it is live)
    lease_live: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def selected(self) -> ModePlan:
        return self.modes[self.mode]

    @property
    def expected_bytes(self) -> int:
        """New bytes this run would write (the selected mode)."""
        sel = self.selected
        return int(
            sel.encode_inputs * self.bytes_per_sample
            + sel.encode_shards * output_format(self.format).size.shard_overhead()
        )

    @property
    def ok(self) -> bool:
        return self.selected.refused is None and self.workers.error is None and not self.lease_live

    def format_text(self) -> str:
        w = self.workers
        shape = "x".join(map(str, self.latent_shape)) if self.latent_shape else "variable"
        lines = [
            f"DRY RUN: nothing is encoded or written to {self.output}",
            f"input            {self.input}  ({self.source.get('kind', '?')}: {self.inputs} inputs found)",
            f"output           {self.output}  ({self.format}, latents {self.latent_format}, "
            f"{self.shard_size} per shard)",
            f"codec            {self.codec}  latent {shape} int8 "
            f"= {self.latent_bytes_per_sample:,.0f} B/sample",
            "plan per --mode  (selected: --mode " + self.mode + ")",
        ]
        for mode in MODES:
            m = self.modes[mode]
            mark = "*" if mode == self.mode else " "
            if m.refused:
                lines.append(f"  {mark} {mode:<10} refused: {m.refused}")
            else:
                lines.append(
                    f"  {mark} {mode:<10} encode {m.encode_shards} shards ({m.encode_inputs} inputs), "
                    f"skip {m.skip_shards} committed shards"
                )
        if w.error:
            lines.append(f"workers          {w.resources_from}: {w.error}")
        else:
            lines.append(
                f"workers          {w.encoders} encoder actors on {w.device}"
                + (f" ({w.threads} torch threads each)" if w.device == "cpu" else "")
                + f", decoding {w.decoding}; resources {w.cpus:g} CPU, {w.gpus:g} GPU [{w.resources_from}]"
            )
        lines.append(
            f"expected output  ~{_human(self.expected_bytes)} this run "
            f"({self.bytes_per_sample:,.0f} B/sample incl. {self.format} overhead"
            + (", upper bound: entropy coding shrinks latents" if self.latent_format != "npy" else "")
            + ")"
        )
        if self.lease:
            state = "a run would be REFUSED" if self.lease_live else "expired: a run would take it over"
            lines.append(f"lease            {self.lease} ({state})")
        lines.extend(f"note             {n}" for n in self.notes)
        lines.append("verdict          " + ("would start" if self.ok else "would NOT start (see above)"))
        return "\n".join(lines)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{n:,.0f} B"
        n /= 1000
    return f"{n:.1f} TB"


def _latent_shape(prep: Prepared, sample: int = 8) -> tuple[tuple[int, ...] | None, float, list[str]]:
    """Latent shape of every sample when fixed; else the mean size over a few decoded inputs."""
    fixed = prep.preprocessor.fixed_shape()
    if fixed:
        shape = tuple(latent_shape_of(prep.codec, fixed))
        return shape, float(math.prod(shape)), []
    sizes = []
    for item in prep.listing.rows(0, min(sample, len(prep.listing))):
        try:
            decoded = prep.preprocessor.decode(prep.source.read_bytes(item), item)
        except Exception:  # noqa: BLE001 - an unreadable input is an error row in the run; skip it here
            continue
        x = prep.preprocessor.codec_input(decoded.array)
        sizes.append(math.prod(prep.codec.latent_shape(tuple(x.shape))))
    note = [f"variable latent shape: size estimated from {len(sizes)} decoded inputs"]
    return None, (sum(sizes) / len(sizes) if sizes else 0.0), note


def cluster_resources(address: str | None) -> tuple[dict[str, float], str]:
    """The resources the run would size its pool from: the Ray cluster's, or this machine's."""
    if address:
        return ray_exec.resources_of_cluster(address), f"Ray cluster at {address}"
    gpus = 0
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no CUDA build, no GPUs
        gpus = 0
    return {"CPU": float(os.cpu_count() or 1), "GPU": float(gpus)}, "this machine (no --address)"


def plan_encode(cfg: EncodeConfig, resources: dict[str, float] | None = None) -> PlanReport:
    """The dry run. `resources` overrides the cluster's (tests); the output is only read."""
    prep = prepare_run(cfg)
    modes: dict[str, ModePlan] = {}
    for mode in MODES:
        try:
            plan = plan_run(prep.root, prep.listing, prep.identity, cfg.sink.shard_size, mode, write=False)
        except OutputConflictError as err:
            modes[mode] = ModePlan(0, 0, 0, refused=str(err))
            continue
        inputs = sum(len(t.items) for t in plan.todo)
        modes[mode] = ModePlan(len(plan.todo), len(plan.done), inputs)

    if resources is None:
        resources, where = cluster_resources(cfg.ray.address)
    else:
        where = "given resources"
    try:
        encoders, threads, device = worker_plan(cfg, resources)
        error = None
    except RuntimeError as err:
        encoders, threads, device, error = 0, 0, "-", str(err)
    workers = WorkerPlan(
        encoders,
        threads,
        device,
        resources.get("CPU", 0.0),
        resources.get("GPU", 0.0),
        where,
        error,
        decoding="JPEGs in the encoder actors (CPU path per sample)"
        if cfg.ray.decode == "gpu"
        else "on CPUs",
    )

    shape, latent_bytes, notes = _latent_shape(prep)
    labelled = prep.listing.any_labelled(100)
    lease = read_lease(prep.root)
    return PlanReport(
        input=cfg.input,
        output=cfg.output,
        source=prep.source_description(),
        inputs=len(prep.listing),
        mode=cfg.mode,
        modes=modes,
        codec=f"{prep.codec.name} ({prep.codec.hash[:12]})",
        latent_shape=shape,
        latent_bytes_per_sample=latent_bytes,
        bytes_per_sample=output_format(cfg.sink.format).size.bytes_per_sample(
            latent_bytes, labelled, cfg.sink.flip_pair
        ),
        shard_size=cfg.sink.shard_size,
        format=cfg.sink.format,
        latent_format=cfg.sink.latent_format,
        workers=workers,
        lease=lease.describe() if lease else None,
        lease_live=bool(lease and lease.live(time.time())),
        notes=notes,
    )


def dry_run_main(cfg: EncodeConfig) -> int:
    """For the jobs' --dry-run: print the plan; 0 if the run would start, 1 if it would be refused."""
    report = plan_encode(cfg)
    print(report.format_text())
    return 0 if report.ok else 1
