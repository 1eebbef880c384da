"""Colorization: grey image in, colour out, on latents vs 64x64 pixels vs 256x256 pixels, N seeds.

    colour 256x256 crop --grey (ITU-R 601 luma, replicated to RGB by the pipeline)--> encode --> z_grey
                        --------------------------------------------------------> encode --> z_colour
    latent arm: z_grey (12x32x32) -> z_colour, decoded by the same codec to 256x256
    pixel arm:  grey 3x64x64 -> colour 3x64x64, bicubic-upsampled to 256x256 (as many values as z)
    full arm:   grey 3x256x256 -> colour 3x256x256 (16x the values: the ceiling)

Every arm is the same U-Net (models.Translator: cell stem, shared trunk, cell unstem) predicting a
residual over its input, so it starts at its grey floor; every arm's loss is the mean squared
error of its own output in proportion to its pixel error (latents: per-channel weights std^2, since
the KLT codecs' synthesis is near-orthonormal). All are scored at 256x256 against the colour crop:
chroma PSNR (BT.601 Cb, Cr: the colour alone, the primary metric), PSNR and colourfulness. The
report also gives each arm's ceiling (its colour target through its own representation) and floor
(its grey input: no colour predicted).

Data: a folder with train/ and val/ (data/colour from `scripts/fetch_data.py --steps colour`: crops
of ~180 real colour photographs and astrophotos, split by source image), else any image folder,
split at random (val crops may then share photographs with train crops).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402
from torch import Tensor  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from ..codec import WaLLoC  # noqa: E402
from ..config import DEFAULT_IMAGE_CODEC  # noqa: E402
from ..metrics import chroma_psnr, colourfulness, psnr  # noqa: E402
from ..preprocess.image import ImagePolicy, decode_image  # noqa: E402
from .arms import Arm, comparison, select_arms  # noqa: E402
from .data import (  # noqa: E402
    IMAGE_SIDE,
    Standardizer,
    encode_folder,
    image_files,
    load_pixels,
    read_latents,
    run_info,
    source_path,
    to_model_pixels,
)
from .loop import ArmResult, LearnConfig, interleaved_speed, predict, train_stream, weighted_mse  # noqa: E402
from .measure import pick_device  # noqa: E402
from .models import NetConfig, Translator  # noqa: E402
from .report import (  # noqa: E402
    Report,
    job_config,
    plot_seeds,
    seed_summary,
    seed_table,
    summary_table,
    write_report,
)

METRIC = "chroma_psnr"


@dataclass(frozen=True)
class ColorizeConfig:
    output: str = "out/learn-colorize"
    images: str | None = "data/colour"  # colour photos; 256x256 crops + grey copies are encoded
    latents: str | None = None  # a run made by a previous call (its pairs/ folder must still exist)
    codec: str = DEFAULT_IMAGE_CODEC
    samples: int | None = None  # training images (seeded choice); None: every train image
    val_samples: int | None = None  # held-out images; None: every val image (a folder without val/: 20%)
    device: str = "auto"
    arms: tuple[str, ...] = ("latent", "pixel", "full")
    seeds: int = 3  # train.seed, train.seed + 1, ...: mean and spread per arm
    net: NetConfig = field(default_factory=NetConfig)
    train: LearnConfig = field(default_factory=lambda: LearnConfig(epochs=5, weight_decay=0.05))


def _take(files: list[Path], n: int | None, g: torch.Generator, where: str) -> list[Path]:
    if n is None:
        return files
    if n > len(files):
        raise ValueError(f"{where}: {len(files)} images, need {n}")
    return [files[i] for i in sorted(torch.randperm(len(files), generator=g)[:n].tolist())]


def pick_images(
    images: str | Path, samples: int | None, val_samples: int | None, seed: int
) -> dict[str, list[Path]]:
    """Train and val source images: the folder's own train/ and val/ when it has them (data/colour:
    split by photograph), else a seeded split of every image under it (20% val unless given)."""
    root, g = Path(images), torch.Generator().manual_seed(seed)
    if (root / "train").is_dir() and (root / "val").is_dir():
        return {
            "train": _take(image_files(root / "train"), samples, g, str(root / "train")),
            "val": _take(image_files(root / "val"), val_samples, g, str(root / "val")),
        }
    files = image_files(root)
    n_val = val_samples if val_samples is not None else max(1, len(files) // 5)
    n_train = samples if samples is not None else len(files) - n_val
    if n_train < 1 or len(files) < n_train + n_val:
        raise ValueError(f"{images}: {len(files)} images, need {n_train} + {n_val}")
    chosen = [files[i] for i in torch.randperm(len(files), generator=g)[: n_train + n_val].tolist()]
    return {"train": chosen[:n_train], "val": chosen[n_train:]}


def build_pairs(
    images: str | Path,
    dest: Path,
    samples: int | None,
    val_samples: int | None,
    seed: int,
    progress: bool = False,
) -> int:
    """Write 256x256 colour crops and their grey copies as dest/<split>/{colour,grey}/<n>.png.

    The crop is the pipeline's own (shorter side to 256, centre crop), so encoding the PNG again
    is lossless with respect to the crop and the 256x256 colour PNG is the ground truth."""
    chosen = pick_images(images, samples, val_samples, seed)
    policy = ImagePolicy(size=IMAGE_SIDE, crop="center", channels=3)
    jobs = [(split, n, path) for split, paths in chosen.items() for n, path in enumerate(paths)]
    for split, n, path in tqdm(jobs, desc="pairs", leave=False, disable=not progress):
        rgb = Image.fromarray(decode_image(path.read_bytes(), policy).array.transpose(1, 2, 0))
        for kind, img in (("colour", rgb), ("grey", rgb.convert("L"))):
            out = dest / split / kind / f"{n:05d}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            if not out.exists():
                img.save(out)
    return len(jobs)


def decode_latents(codec: WaLLoC, z: Tensor, batch: int = 32) -> Tensor:
    """Dequantized (float) latents -> RGB in [0, 1]; the codec's decode() without re-quantizing."""
    outs = []
    with torch.no_grad():
        for s in range(0, len(z), batch):
            x = codec.synthesize(codec.decoder(z[s : s + batch].float())).clamp(-0.5, 0.5)
            outs.append(x + 0.5)
    return torch.cat(outs)


def upsample(x: Tensor, side: int = IMAGE_SIDE) -> Tensor:
    """Pixels in [-0.5, 0.5] -> [0, 1] at `side` (bicubic, clamped; at its own side: only shifted)."""
    if x.shape[-1] != side:
        x = F.interpolate(x.float(), size=(side, side), mode="bicubic", align_corners=False)
    return (x.float() + 0.5).clamp(0, 1)


@dataclass
class ArmData:
    """One arm's tensors: train inputs and targets (uint8 pixels or normalized latents), val inputs
    ready for the model, how outputs become RGB at 256, and its loss."""

    arm: Arm
    cell: int
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    to_rgb: Callable[[Tensor], Tensor]
    loss: Callable[[Tensor, Tensor], Tensor]

    def to_model(self, x: Tensor) -> Tensor:
        return x if self.arm.domain == "latent" else to_model_pixels(x)


def arm_batches(d: ArmData, seed: int, batch_size: int) -> Callable[[int], Iterator[tuple[Tensor, Tensor]]]:
    """epoch -> (input, target) batches in the order every arm gets for this seed and epoch."""

    def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(len(d.x_train), generator=g)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            yield d.to_model(d.x_train[idx]), d.to_model(d.y_train[idx])

    return batches


def mean_psnr(pred: Tensor, truth: Tensor) -> float:
    return float(np.mean([psnr(t[None], p[None]) for p, t in zip(pred, truth, strict=True)]))


def mean_chroma_psnr(pred: Tensor, truth: Tensor) -> float:
    return float(np.mean([chroma_psnr(t[None], p[None]) for p, t in zip(pred, truth, strict=True)]))


def scores(rgb: Tensor, truth: Tensor) -> dict[str, float]:
    """Every arm's metrics at 256x256 against the colour crop (both RGB in [0, 1])."""
    return {
        METRIC: mean_chroma_psnr(rgb, truth),
        "psnr_256": mean_psnr(rgb, truth),
        "colourfulness": colourfulness(rgb).mean().item(),
    }


def pair_rows(meta: list[dict]) -> dict[str, list[dict[str, int]]]:
    """Latent rows of each (grey, colour) pair by split, from the paths <split>/<kind>/<n>.png."""
    rows: dict[tuple[str, str], dict[str, int]] = {}
    for i, m in enumerate(meta):
        split, kind, name = Path(m["path"]).parts[-3:]
        rows.setdefault((split, Path(name).stem), {})[kind] = i
    return {s: [v for k, v in sorted(rows.items()) if k[0] == s and len(v) == 2] for s in ("train", "val")}


def run(cfg: ColorizeConfig) -> Report:
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    progress = cfg.train.progress
    arms = select_arms(cfg.arms)
    t_start = time.perf_counter()
    if cfg.latents:
        root = cfg.latents
    elif cfg.images:
        build_pairs(cfg.images, out / "pairs", cfg.samples, cfg.val_samples, cfg.train.seed, progress)
        root = encode_folder(out / "pairs", out / "latents", cfg.codec)
    else:
        raise ValueError("give images (colour photos) or latents (a run of a previous colorize job)")
    ls = read_latents(root, progress)
    codec = run_info(root).codec(cfg.codec if cfg.codec != DEFAULT_IMAGE_CODEC else None)
    codec.eval()
    pairs = pair_rows(ls.meta)
    tr, va = pairs["train"], pairs["val"]
    if not tr or not va:
        raise ValueError(f"{root}: needs train and val pairs of grey/colour samples")

    def z_of(idx: list[dict[str, int]], kind: str) -> Tensor:
        return ls.z[torch.tensor([r[kind] for r in idx])].float()

    def paths(idx: list[dict[str, int]], kind: str) -> list[Path]:
        return [source_path(ls.meta[r[kind]]) for r in idx]

    norm = Standardizer.from_run(root)  # the manifest's statistics, per channel (grey and colour samples)
    truth = load_pixels(paths(va, "colour"), IMAGE_SIDE, progress).float() / 255  # (N, 3, 256, 256)
    data: dict[str, ArmData] = {}
    for arm in arms:
        if arm.domain == "latent":
            data[arm.name] = ArmData(
                arm,
                1,
                norm(z_of(tr, "grey")),
                norm(z_of(tr, "colour")),
                norm(z_of(va, "grey")),
                lambda y: decode_latents(codec, norm.inverse(y)),
                weighted_mse(norm.std.flatten() ** 2),
            )
        else:
            data[arm.name] = ArmData(
                arm,
                arm.side // ls.z.shape[-1],
                load_pixels(paths(tr, "grey"), arm.side, progress),
                load_pixels(paths(tr, "colour"), arm.side, progress),
                to_model_pixels(load_pixels(paths(va, "grey"), arm.side, progress)),
                upsample,
                F.mse_loss,
            )
    prepared_s = time.perf_counter() - t_start

    results: dict[str, list[ArmResult]] = {a.name: [] for a in arms}
    outputs: dict[str, Tensor] = {}
    for k in range(cfg.seeds):
        seed = cfg.train.seed + k
        tcfg = replace(cfg.train, seed=seed)
        trained = {}
        for arm in arms:
            d = data[arm.name]
            torch.manual_seed(seed)
            model = Translator(d.x_val.shape[1], d.x_val.shape[1], d.cell, cfg.net)

            def evaluate(m, d=d):
                return scores(d.to_rgb(predict(m, d.x_val, device)), truth)

            batches = arm_batches(d, seed, tcfg.batch_size)
            steps = -(-len(d.x_train) // tcfg.batch_size)
            example = next(iter(batches(0)))
            result = train_stream(
                f"{arm.name} s{seed}", model, batches, steps, example, d.loss, evaluate, tcfg, device
            )
            results[arm.name].append(result)
            trained[result.name] = (model, *example)
            if k == 0:
                outputs[arm.name] = d.to_rgb(predict(model, d.x_val, device))
        losses = {f"{a.name} s{seed}": data[a.name].loss for a in arms}
        for name, speed in interleaved_speed(trained, losses, tcfg, device).items():
            next(r for rs in results.values() for r in rs if r.name == name).samples_per_s = speed

    summary = seed_summary(results, METRIC)
    plot_seeds(results, METRIC, out / "chroma_psnr.png")
    references = reference_points(data, codec, norm, z_of(va, "colour"), paths(va, "colour"), truth)
    shapes = {a.name: "x".join(map(str, data[a.name].x_val.shape[1:])) for a in arms}
    report = Report(
        task="colorize",
        title="Colorization: "
        + ", ".join(f"{n} ({s})" for n, s in shapes.items())
        + f"; same U-Net, {cfg.seeds} seeds",
        metric=METRIC,
        arms={r.name: r for rs in results.values() for r in rs},
        data={
            "latents": root,
            "images": cfg.images,
            "train pairs": len(tr),
            "val pairs": len(va),
            "codec": f"{codec.name} ({codec.hash[:12]})",
            "inputs": "; ".join(f"{a.name} {shapes[a.name]}: {a.about}" for a in arms),
            "wall seconds (pairs + encode + load, then all training)": (
                f"{prepared_s:.0f} + {time.perf_counter() - t_start - prepared_s:.0f}"
            ),
        },
        notes=_notes(cfg),
        config=job_config("colorize", cfg, device),
        extra={"seeds": summary, **comparison(summary), **above_floor(summary, references), **references},
        tables=[(f"Chroma PSNR (dB) over {cfg.seeds} seeds", seed_table(summary))],
        figures=[
            ("chroma_psnr.png", f"held-out chroma PSNR per arm: each seed, mean and sd over {cfg.seeds}"),
            ("samples.png", "val: grey input, each arm's colour (first seed), ground truth, at 256x256"),
        ],
    )
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    grey = (truth * luma).sum(1, keepdim=True).expand_as(truth)
    _plot_samples(grey, outputs, truth, out / "samples.png")
    write_report(report, out)
    print(summary_table(report))
    print(seed_table(summary))
    return report


def reference_points(
    data: dict[str, ArmData],
    codec: WaLLoC,
    norm: Standardizer,
    z_colour_val: Tensor,
    colour_paths: list[Path],
    truth: Tensor,
) -> dict[str, float]:
    """Per arm, chroma PSNR of its floor (the grey input as the output) and its ceiling (the colour
    target through its representation), plus the ground truth's colourfulness."""
    out = {"ground truth colourfulness": colourfulness(truth).mean().item()}
    for name, d in data.items():
        if d.arm.domain == "latent":
            ceiling = decode_latents(codec, z_colour_val)
        elif d.arm.side == IMAGE_SIDE:
            ceiling = truth  # the colour crop at 256 is the truth itself: nothing to load again
        else:
            ceiling = upsample(to_model_pixels(load_pixels(colour_paths, d.arm.side)))
        out[f"{name} floor (grey input), {METRIC}"] = mean_chroma_psnr(d.to_rgb(d.x_val), truth)
        out[f"{name} ceiling (colour target), {METRIC}"] = mean_chroma_psnr(ceiling, truth)
    return out


def above_floor(summary: dict[str, dict[str, float]], references: dict[str, float]) -> dict[str, float | str]:
    """Each arm's mean gain over its own grey floor, and whether every seed is above it."""
    out: dict[str, float | str] = {}
    for name, s in summary.items():
        floor = references[f"{name} floor (grey input), {METRIC}"]
        out[f"{name} gain over its grey floor, dB"] = round(s["mean"] - floor, 4)
        out[f"{name} above its grey floor (every seed)"] = str(s["min"] > floor)
    return out


def _notes(cfg: ColorizeConfig) -> list[str]:
    return [
        "Every arm: the same U-Net (cell stem: 1x1 convs on latents, 2x2 cells at 64x64, 8x8 cells at "
        "256x256; shared trunk; the stem's mirror at the output), predicting a residual over its grey "
        f"input; the same AdamW (weight decay {cfg.train.weight_decay}), epochs, batch order and seeds.",
        "Losses: MSE in each arm's own domain, proportional to its pixel error (latents: standardized "
        "per channel with the run manifest's statistics, each channel's error weighted by its variance).",
        "Primary metric: chroma PSNR at 256x256 (BT.601 Cb and Cr against the colour crop's): the "
        "colour alone, so the 64x64 arm's blurrier luma does not count against it. PSNR (all of RGB) "
        "and Hasler-Suesstrunk colourfulness are given beside it.",
        "Grey input: ITU-R 601 luma (PIL 'L'), replicated to RGB by the pipeline's decoding rule.",
        "Plain MSE regression favours desaturated (mean) colours; compare colourfulness with the ground "
        "truth's, not only PSNR.",
        "Samples/s is the training step on tensors in memory, measured in alternating rounds per seed.",
    ]


def _plot_samples(grey: Tensor, outputs: dict[str, Tensor], truth: Tensor, path: Path) -> None:
    n = min(6, len(truth))
    pick = torch.linspace(0, len(truth) - 1, n).long().tolist()
    rows = [("grey input", grey), *((f"{k} arm", v) for k, v in outputs.items()), ("ground truth", truth)]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.9 * n, 1.9 * len(rows)), squeeze=False)
    for r, (label, imgs) in enumerate(rows):
        for c, i in enumerate(pick):
            ax = axes[r, c]
            ax.imshow(imgs[i].permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
