"""One codec-training job, end to end: data split -> (KLT) init -> training -> codec file + metadata.

jobs/train_codec.py is a thin command line over `CodecJob` and `run_job`.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import platform
import sys
import warnings
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset

from pipeline.codec import CodecConfig, WaLLoC, build, load, save

from . import codec_data as D
from .codec_loop import (
    CHECKPOINT,
    CodecTrainConfig,
    CodecTrainResult,
    load_checkpoint,
    train,
    train_ray,
    validate,
)
from .klt import (
    fit_klt,
    init_deep_decoder_from_klt,
    init_encoder_from_klt,
    init_residual_decoder_from_klt,
    klt_codec,
)


@dataclass
class CodecJob:
    kind: Literal["2d", "1d"]  # images (RGB, or grey with channels=1) or audio (stereo)
    data: list[str]  # image or audio folders
    out: str  # codec path stem: writes <out>.json + <out>.safetensors
    name: str | None = None  # codec name in its JSON (default: the stem)
    channels: int | None = None  # signal channels (default: 3 for 2d, 2 for 1d; 2d also takes 1: grey)
    J: int = 3  # wavelet packet levels
    latent_dim: int = 12  # latent channels
    latent_bits: int = 8  # latent integer bits
    Nd: int = 128  # decoder width (the reference: 768)
    Ne: int | None = None  # conv encoder width (only without the lightweight 1x1 encoder)
    lightweight: bool = True  # 1x1 conv encoder
    post_filter: bool = False  # 1-D: 129-tap filter after synthesis
    decoder: Literal["deep", "linear", "residual"] = "deep"  # linear + steps 0: the closed-form KLT codec
    crop: int = 128  # 2-D: random crop side in pixels
    window: int = 1 << 15  # 1-D: random window length in samples
    sample_rate: int = 44100  # 1-D: files at another rate are refused
    kinds: tuple[str, ...] = ("photo",)  # MANIFEST.tsv kinds to train on (2-D; roots without one: all)
    valid_fraction: float = 0.2  # share of files held out (by file) for validation/evaluation
    split_seed: int = 0  # salt of the split hash
    init: Literal["none", "klt"] = "none"  # klt: start at the KLT codec (see klt.py), 1-D: identity post
    klt_batches: int = 16  # batches used to fit the KLT
    klt_gain: float | None = None  # None: whitening KLT; G: equal quantizer step, lower G = fewer bits
    freeze_encoder: bool = False  # train the decoder only (the encoder keeps its KLT init, and the rate)
    init_codec: str | None = None  # start from this codec's weights (name or path; same config): fine-tune
    work_dir: str | None = None  # checkpoints + log (default: <out>.work)
    stop_at: int | None = None  # end this session at this step (resumable; the schedule aims at steps)
    workers: int = 1  # >1 or address: Ray Train data parallel
    address: str | None = None  # Ray cluster address ("auto", "ray://host:10001", ...)
    command: str = ""  # recorded in the metadata
    note: str = ""  # recorded in the metadata (trade-offs, purpose)
    train: CodecTrainConfig = field(default_factory=CodecTrainConfig)

    @property
    def codec_config(self) -> CodecConfig:
        return CodecConfig(
            kind=self.kind,
            channels=self.channels or (3 if self.kind == "2d" else 2),
            J=self.J,
            latent_dim=self.latent_dim,
            latent_bits=self.latent_bits,
            lightweight_encode=self.lightweight,
            Ne=self.Ne,
            Nd=self.Nd,
            post_filter=self.post_filter,
            decoder=self.decoder,
        )

    @property
    def ckpt_dir(self) -> Path:
        return Path(self.work_dir or f"{self.out}.work")


def split(job: CodecJob) -> tuple[list[D.Item], list[D.Item]]:
    """The job's (train, held-out) items: the same for every worker and every rerun."""
    if job.kind == "2d":
        items = D.filter_kinds(D.find_items(job.data, D.IMAGE_EXTS), job.kinds)
    else:
        items = D.find_items(job.data, D.AUDIO_EXTS, stems=True)
    return D.split_by_file(items, job.valid_fraction, job.split_seed)


def datasets(job: CodecJob, seed: int) -> tuple[Dataset, Tensor]:
    """(random training samples, fixed validation batch) from the job's split."""
    train_items, valid_items = split(job)
    if job.kind == "2d":
        return (
            D.ImageCrops(train_items, job.crop, seed=seed, channels=job.codec_config.channels),
            D.image_eval_batch(valid_items, max(job.crop, 256), channels=job.codec_config.channels),
        )
    ds = D.AudioWindows(train_items, job.window, sample_rate=job.sample_rate, seed=seed)
    return ds, D.audio_eval_batch(valid_items, job.window)


def setup(job: CodecJob) -> tuple[WaLLoC, Dataset, Tensor]:
    """Codec (KLT-initialised if asked and not resuming), training data, validation batch."""
    data, valid = datasets(job, job.train.seed)
    codec = build(job.codec_config)
    fresh = not (job.ckpt_dir / CHECKPOINT).exists()
    if job.init_codec and fresh:
        start = load(job.init_codec)
        if start.config != codec.config:
            raise ValueError(f"init codec {job.init_codec} is {start.config}, the job builds {codec.config}")
        codec.load_state_dict(start.state_dict())
    elif job.init == "klt" and fresh:
        klt = fit_klt_on(job, codec)
        init_encoder_from_klt(codec, klt, job.klt_gain)
        if job.decoder == "deep":
            try:
                init_deep_decoder_from_klt(codec, klt, job.klt_gain)
            except ValueError as err:  # a decoder too narrow for the construction: encoder only
                warnings.warn(f"decoder not initialised from the KLT: {err}", stacklevel=2)
        elif job.decoder == "residual":
            init_residual_decoder_from_klt(codec, klt, job.klt_gain)
    if job.freeze_encoder:  # the decoder learns from the exact integers it will decode
        codec.encoder.requires_grad_(False)
        codec.compander.round_in_training = True
    return codec, data, valid


def fit_klt_on(job: CodecJob, codec: WaLLoC):
    """KLT of the training split (its own sample seed, so it is not the first training batches)."""
    data, _ = datasets(job, job.train.seed + 1)
    b = job.train.batch_size
    batches = (torch.stack([data[i * b + j] for j in range(b)]) for i in range(job.klt_batches))
    return fit_klt(codec, batches)


def software() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("torch", "diffusers", "numpy", "pillow", "soundfile", "walloc-pipeline"):
        with contextlib.suppress(importlib_metadata.PackageNotFoundError):
            out[pkg] = importlib_metadata.version(pkg)
    return out


def run_job(job: CodecJob) -> Path:
    """Train (or fit) the codec and write it in the project format; returns the JSON path."""
    train_items, valid_items = split(job)
    started = datetime.datetime.now(datetime.timezone.utc)
    extra: dict = {}
    if job.decoder == "linear" and job.train.steps == 0:  # closed form: the KLT codec
        probe = build(job.codec_config)
        klt = fit_klt_on(job, probe)
        codec = klt_codec(job.codec_config, klt, job.klt_gain)
        _, valid = datasets(job, job.train.seed)
        result = CodecTrainResult(
            step=0, wall_s=(datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
        )
        result.val_psnr.append((0, validate(codec, valid)))
        extra = {"klt": {"vectors": klt.count, "energy_kept": klt.energy_fraction(job.latent_dim)}}
    elif job.workers > 1 or job.address:
        # workers may run in another folder or on another node: give them absolute paths
        remote = replace(
            job, data=[str(Path(d).resolve()) for d in job.data], work_dir=str(job.ckpt_dir.resolve())
        )
        train_ray(
            functools.partial(setup, remote),
            job.train,
            job.ckpt_dir,
            workers=job.workers,
            address=job.address,
        )
        codec = build(job.codec_config)
        state = load_checkpoint(job.ckpt_dir / CHECKPOINT)
        codec.load_state_dict(state["model"])
        result = CodecTrainResult(
            state["step"], state["wall_s"], state["losses"], [tuple(v) for v in state["val_psnr"]]
        )
    else:
        codec, data, valid = setup(job)
        result = train(codec, data, valid, job.train, job.ckpt_dir, stop_at=job.stop_at)
    codec = codec.cpu().freeze()
    training = {
        "data": D.describe_split(train_items, valid_items),
        "kinds": list(job.kinds) if job.kind == "2d" else None,
        "crop" if job.kind == "2d" else "window": job.crop if job.kind == "2d" else job.window,
        "init": f"codec {job.init_codec}" if job.init_codec else job.init,
        "klt_gain": job.klt_gain,
        "freeze_encoder": job.freeze_encoder,
        "steps": result.step,
        "wall_s": round(result.wall_s, 1),
        "final_valid_psnr_db": result.final_psnr,
        "valid_psnr_db": [[s, round(p, 3)] for s, p in result.val_psnr],
        "train_config": asdict(job.train),
        "workers": job.workers,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "command": job.command or " ".join(sys.argv),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "software": software(),
        **extra,
    }
    metadata = {"note": job.note, "training": training}
    if job.kind == "1d":
        metadata["sample_rate"] = job.sample_rate
    return save(codec, job.out, name=job.name, metadata=metadata)
