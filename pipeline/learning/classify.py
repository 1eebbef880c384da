"""Image classification: latents vs same-size pixels vs full-resolution pixels, same trunk, N seeds.

Arms (arms.ARMS): the codec's latents of the 256x256 image, the image at 64x64 (as many values) and at
256x256 (what the codec saw: the ceiling). Every arm reaches the trunk's 32x32 grid through a cell
stem of the same depth (models.cell_stem), gets the same dropout, weight decay, batch order and the
same augmentation, exact in each domain (Augment). The report answers the comparison's questions
(comparison): does resolution matter, how much of the gap the latents recover, and whether each
difference is beyond the seeds' spread.

Data: an ImageNet-layout folder (`train/<class>/*`, `val/<class>/*`; a folder without split
folders is split 80/20 by key), encoded by the pipeline with flip pairs, or an existing run
(`latents`) whose samples' source files are still on disk for the pixel arms. The default is elpv
(scripts/fetch_elpv.py). data/imagenet-mini (scripts/fetch_data.py) is seeded crops of ~50 photos
whose val crops share photographs with train crops; the report counts that overlap (CROPS.tsv).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402

from ..config import image_codec_for  # noqa: E402
from ..loaders import LatentWebDataset  # noqa: E402
from ..loaders.augment import roll_is_exact  # noqa: E402
from ..loaders.common import flip_choice  # noqa: E402
from ..metrics import accuracy  # noqa: E402
from .arms import Arm, comparison, select_arms  # noqa: E402
from .data import (  # noqa: E402
    PIXEL_SIDE,
    LatentSet,
    Standardizer,
    encode_folder,
    image_channels,
    image_files,
    load_pixels,
    read_latents,
    run_info,
    source_path,
    split_of,
    to_model_pixels,
)
from .loop import ArmResult, LearnConfig, interleaved_speed, predict, train_stream  # noqa: E402
from .measure import pick_device  # noqa: E402
from .models import CellClassifier, NetConfig  # noqa: E402
from .report import (  # noqa: E402
    Report,
    job_config,
    plot_seeds,
    seed_summary,
    seed_table,
    summary_table,
    write_report,
)


@dataclass(frozen=True)
class Augment:
    """The same augmentation for every arm, exact in each domain: a horizontal flip (latents: the
    stored latent of the mirrored image, --flip-pair, since a latent flip is not exact: docs/flips.md)
    and a circular shift by whole latent positions (2^J pixels: exact on latents, augment.roll)."""

    flip: bool = True
    roll: int = 4  # shifts drawn from [-roll, roll] latent positions per axis; 0: none


@dataclass(frozen=True)
class ClassifyConfig:
    output: str = "out/learn-classify"
    images: str | None = "data/elpv-binary"  # encoded into <output>/latents unless `latents` is given
    latents: str | None = None  # an existing pipeline run (WebDataset) to train from
    codec: str | None = None  # None: the bundled codec for the images' channels (image_codec_for)
    samples: int | None = None  # cap on training samples (seeded choice); None = all
    device: str = "auto"
    arms: tuple[str, ...] = ("latent", "pixel", "full")
    seeds: int = 3  # train.seed, train.seed + 1, ...: mean and spread per arm
    dropout: float = 0.2  # before the linear head, every arm
    augment: Augment = field(default_factory=Augment)
    net: NetConfig = field(default_factory=NetConfig)
    train: LearnConfig = field(default_factory=lambda: LearnConfig(epochs=8, weight_decay=0.05))


def pick_codec(cfg: ClassifyConfig) -> str:
    """The codec named in the config, else the bundled one for the images' channels (grey: grey-16x-klt)."""
    if cfg.codec:
        return cfg.codec
    if not cfg.images:
        raise ValueError("give images (a folder to encode) or a codec")
    return image_codec_for(image_channels(image_files(cfg.images)))


def split_rows(ls: LatentSet) -> tuple[list[int], list[int]]:
    """Train/val rows from the samples' paths (train/..., val/...), else every 5th key is val."""
    splits = [split_of(m) for m in ls.meta]
    if "val" in splits and "train" in splits:
        return [i for i, s in enumerate(splits) if s == "train"], [
            i for i, s in enumerate(splits) if s == "val"
        ]
    return [i for i in range(len(ls.keys)) if i % 5], [i for i in range(len(ls.keys)) if i % 5 == 0]


def photo_overlap(images: Path | None, train_paths: list[str], val_paths: list[str]) -> dict | None:
    """How many val crops share a source photograph with some train crop (from CROPS.tsv, if present)."""
    table = images / "CROPS.tsv" if images else None
    if table is None or not table.is_file():
        return None
    with table.open() as f:
        source = {r["file"]: r["source"] for r in csv.DictReader(f, delimiter="\t")}
    train_photos = {source.get(p) for p in train_paths} - {None}
    val_photos = [source.get(p) for p in val_paths]
    shared = sum(p in train_photos for p in val_photos if p)
    return {
        "val_crops": len(val_paths),
        "val_crops_from_train_photos": shared,
        "photos": len(set(source.values())),
    }


def class_names(images: Path | None, label_map: dict[str, int]) -> list[str]:
    names = {c: c for c in label_map}
    mapping = images / "LOC_synset_mapping.txt" if images else None
    if mapping is not None and mapping.is_file():
        for line in mapping.read_text().splitlines():
            wnid, _, name = line.partition(" ")
            if wnid in names:
                names[wnid] = name.split(",")[0]
    return [names[c] for c, _ in sorted(label_map.items(), key=lambda kv: kv[1])]


@dataclass
class ArmData:
    """One arm's inputs: training samples (uint8 pixels, or None: latents come from the loader each
    epoch, with its flip pairs) and the val inputs ready for the model."""

    arm: Arm
    cell: int  # input values per trunk grid position along an axis (1 for latents)
    train: Tensor | None
    val: Tensor

    def to_model(self, x: Tensor) -> Tensor:
        return x if self.arm.domain == "latent" else to_model_pixels(x)


def epoch_plan(seed: int, epoch: int, keys: list[str], roll: int) -> tuple[Tensor, Tensor, Tensor]:
    """(batch order, flip per sample, (dy, dx) shift per sample) of one epoch, the same for every arm:
    flips follow the loaders' per-(seed, epoch, key) choice, so the latent arm's flip="pair" loader
    flips exactly the samples the pixel arms flip."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(keys), generator=g)
    flips = torch.tensor([flip_choice(seed, epoch, k) for k in keys], dtype=torch.bool)
    shifts = (
        torch.randint(-roll, roll + 1, (len(keys), 2), generator=g) if roll else torch.zeros(len(keys), 2)
    )
    return order, flips, shifts.long()


def augmented(x: Tensor, flips: Tensor | None, shifts: Tensor, cell: int) -> Tensor:
    """Flip (where asked; None: already flipped, i.e. latents from flip pairs) and roll each sample by
    its shift in grid positions (cell values each)."""
    x = x.clone()
    if flips is not None and flips.any():
        x[flips] = x[flips].flip(-1)
    for i, (dy, dx) in enumerate(shifts.tolist()):
        if dy or dx:
            x[i] = torch.roll(x[i], (dy * cell, dx * cell), dims=(-2, -1))
    return x


def arm_batches(
    d: ArmData,
    keys: list[str],
    labels: Tensor,
    seed: int,
    batch_size: int,
    augment: Augment,
    latents_of: Callable[[int], Tensor],
) -> Callable[[int], Iterator[tuple[Tensor, Tensor]]]:
    """epoch -> that epoch's (inputs, labels) batches of one arm, in the order and with the flips and
    shifts every arm gets (epoch_plan); latents come from `latents_of(epoch)` (the loader's pairs)."""

    def batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        order, flips, shifts = epoch_plan(seed, epoch, keys, augment.roll)
        if d.train is None:
            source, flips = latents_of(epoch), None  # already flipped where chosen
        else:
            source = d.train
            flips = flips if augment.flip else torch.zeros_like(flips)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            f = None if flips is None else flips[idx]
            yield d.to_model(augmented(source[idx], f, shifts[idx], d.cell)), labels[idx]

    return batches


def latent_epochs(root: str, keys: list[str], norm: Standardizer, seed: int, flip: bool):
    """epoch -> the training latents of that epoch, normalized, from the stock loader (flip="pair":
    for about half the keys the stored latent of the mirrored image, chosen per (seed, epoch, key))."""
    data = LatentWebDataset(
        root, output="float", flip="pair" if flip else None, shuffle_shards=False, seed=seed, cache_mb=1024
    )
    row = {k: i for i, k in enumerate(keys)}

    def of_epoch(epoch: int) -> Tensor:
        data.set_epoch(epoch)
        z = [None] * len(keys)
        for b in data:
            if b.key in row:
                z[row[b.key]] = b.latents
        return norm(torch.stack(z).float())

    return of_epoch


def run(cfg: ClassifyConfig) -> Report:
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    progress = cfg.train.progress
    arms = select_arms(cfg.arms)
    t_start = time.perf_counter()
    if cfg.latents:
        root = cfg.latents
    elif cfg.images:
        root = encode_folder(cfg.images, out / "latents", pick_codec(cfg), flip_pair=cfg.augment.flip)
    else:
        raise ValueError("give images (a folder to encode) or latents (a pipeline run)")
    info = run_info(root)
    if cfg.augment.flip and not info.flip_pair:
        raise ValueError(f"{root}: flip augmentation needs a run encoded with --flip-pair (or no flips)")
    ls = read_latents(root, progress)
    label_map = info.label_map
    tr, va = split_rows(ls)
    if cfg.samples is not None and cfg.samples < len(tr):
        g = torch.Generator().manual_seed(cfg.train.seed)
        tr = sorted(tr[i] for i in torch.randperm(len(tr), generator=g)[: cfg.samples].tolist())
    train, val = ls.select(tr), ls.select(va)
    if (train.labels < 0).any():
        raise ValueError(f"{root}: unlabelled samples; classification needs class folders")
    classes = len(label_map)
    channels = int(info.manifest["codec"]["config"]["channels"])  # the pixel arms', too
    grid = train.z.shape[-1]
    codec = info.codec(cfg.codec) if cfg.codec else info.codec()  # a codec file, or the run's bundled name
    if cfg.augment.roll and not roll_is_exact(codec):
        raise ValueError(f"{root}: latent rolls are not exact for this codec; use roll=0")
    norm = Standardizer.from_run(root)  # the manifest's statistics, per channel
    paths_train, paths_val = [source_path(m) for m in train.meta], [source_path(m) for m in val.meta]
    data: dict[str, ArmData] = {}
    for arm in arms:
        if arm.domain == "latent":
            data[arm.name] = ArmData(arm, 1, None, norm(val.z))
        else:
            px_tr = load_pixels(paths_train, arm.side, progress, channels)
            px_va = load_pixels(paths_val, arm.side, progress, channels)
            data[arm.name] = ArmData(arm, arm.side // grid, px_tr, to_model_pixels(px_va))
    prepared_s = time.perf_counter() - t_start

    results: dict[str, list[ArmResult]] = {a.name: [] for a in arms}
    preds: dict[str, Tensor] = {}
    for k in range(cfg.seeds):
        seed = cfg.train.seed + k
        tcfg = replace(cfg.train, seed=seed)
        latents_of = latent_epochs(root, train.keys, norm, seed, cfg.augment.flip)
        trained = {}
        for arm in arms:
            d = data[arm.name]

            batches = arm_batches(d, train.keys, train.labels, seed, tcfg.batch_size, cfg.augment, latents_of)
            torch.manual_seed(seed)
            model = CellClassifier(d.val.shape[1], d.cell, classes, cfg.net, cfg.dropout)

            def evaluate(m, d=d):
                logits = predict(m, d.val, device)
                return {
                    "accuracy": accuracy(logits, val.labels),
                    "val_loss": F.cross_entropy(logits, val.labels).item(),
                }

            steps = -(-len(train.keys) // tcfg.batch_size)
            example = next(iter(batches(0)))
            result = train_stream(
                f"{arm.name} s{seed}", model, batches, steps, example, F.cross_entropy, evaluate, tcfg, device
            )
            results[arm.name].append(result)
            trained[result.name] = (model, *example)
            if k == 0:
                preds[arm.name] = predict(model, d.val, device).argmax(1)
        for name, speed in interleaved_speed(trained, F.cross_entropy, tcfg, device).items():
            next(r for rs in results.values() for r in rs if r.name == name).samples_per_s = speed

    summary = seed_summary(results, "accuracy")
    plot_seeds(results, "accuracy", out / "accuracy.png")
    images = Path(cfg.images) if cfg.images else None
    names = class_names(images, label_map)
    overlap = photo_overlap(
        images, [m.get("path", "") for m in train.meta], [m.get("path", "") for m in val.meta]
    )
    chance = torch.bincount(val.labels, minlength=classes).max().item() / len(val.labels)
    shapes = {a.name: "x".join(map(str, data[a.name].val.shape[1:])) for a in arms}
    report = Report(
        task="classify",
        title="Image classification: "
        + ", ".join(f"{n} ({s})" for n, s in shapes.items())
        + f"; same trunk, {cfg.seeds} seeds",
        metric="accuracy",
        arms={r.name: r for rs in results.values() for r in rs},
        data={
            "latents": root,
            "codec": info.manifest["codec"].get("name"),
            "images": cfg.images,
            "classes": classes,
            "class names": ", ".join(names),
            "train samples": len(tr),
            "val samples": len(va),
            "majority-class val accuracy": round(chance, 4),
            "inputs": "; ".join(f"{a.name} {shapes[a.name]}: {a.about}" for a in arms),
            **(
                {
                    "val crops sharing a source photo with train": (
                        f"{overlap['val_crops_from_train_photos']} of "
                        f"{overlap['val_crops']} ({overlap['photos']} photos in all)"
                    )
                }
                if overlap
                else {}
            ),
        },
        notes=_notes(cfg, overlap),
        config=job_config("classify", cfg, device),
        extra={"seeds": summary, **comparison(summary)},
        tables=[(f"Accuracy over {cfg.seeds} seeds", seed_table(summary))],
        figures=[
            (
                "accuracy.png",
                f"val accuracy per arm: each seed (dots), mean and standard deviation over {cfg.seeds}",
            ),
            ("samples.png", "val images (64x64) with the true class and each arm's prediction (first seed)"),
        ],
    )
    report.data["wall seconds (encode + load, then all training)"] = (
        f"{prepared_s:.0f} + {time.perf_counter() - t_start - prepared_s:.0f}"
    )
    small = (
        data["pixel"].val
        if "pixel" in data
        else to_model_pixels(load_pixels(paths_val, PIXEL_SIDE, False, channels))
    )
    _plot_samples(
        ((small + 0.5) * 255).round().to(torch.uint8), val.labels, preds, names, out / "samples.png"
    )
    write_report(report, out)
    print(summary_table(report))
    print(seed_table(summary))
    return report


def _notes(cfg: ClassifyConfig, overlap: dict | None) -> list[str]:
    aug = cfg.augment
    notes = [
        "Every arm: the same stem shape (a cell x cell stride-cell conv embeds each position of the 32x32 "
        "grid: 1x1 on latents, mixing channels before space; 2x2 on 64x64 pixels; 8x8 on 256x256 pixels; "
        "then a 3x3 conv), the same residual trunk, head, dropout "
        f"{cfg.dropout}, AdamW weight decay {cfg.train.weight_decay}, epochs, batches and seeds.",
        "Augmentation, identical for every arm and exact in each domain: "
        + (
            "horizontal flips (latents: the stored latent of the mirrored image, --flip-pair; the same "
            "samples flip in every arm), "
            if aug.flip
            else "no flips, "
        )
        + (
            f"circular shifts by up to {aug.roll} latent positions (8 pixels at 256, 2 at 64) per axis."
            if aug.roll
            else "no shifts."
        ),
        "Latents are standardized per channel with the run manifest's statistics (docs/statistics.md).",
        "Samples/s is the training step (forward, backward, optimizer) on tensors in memory, measured "
        "in alternating rounds per seed; reading latent shards vs decoding images is measured by "
        "benchmarks/loader_throughput.py.",
    ]
    if cfg.images and "imagenet-mini" in str(cfg.images):
        notes.append(
            "Weak labels: data/imagenet-mini is not ImageNet. It is seeded 256-400 px crops of ~50 real "
            "photographs (scikit-image, Debian wallpapers), each photograph assigned by hand to one of 9 "
            "scene groups; the class of a crop is its photograph's group."
        )
    if cfg.images and "elpv" in str(cfg.images):
        notes.append(
            "elpv (scripts/fetch_elpv.py): 2,624 real electroluminescence photos of solar cells from 44 "
            "modules, CC-BY-NC-SA-4.0; labels are experts' defect probabilities; the split is stratified "
            "but not by module (the package does not say which module a cell came from)."
        )
    if overlap and overlap["val_crops_from_train_photos"]:
        notes.append(
            "Train/val leak by construction: most val crops come from photographs that also give train "
            "crops, "
            "so val accuracy measures recognising scenes seen in training, not generalising to new photos."
        )
    return notes


def _plot_samples(px: Tensor, labels: Tensor, preds: dict, names: list[str], path: Path) -> None:
    n = min(8, len(px))
    fig, axes = plt.subplots(1, n, figsize=(2 * n, 2.2 + 0.35 * len(preds)), squeeze=False)
    for col, i in enumerate(torch.linspace(0, len(px) - 1, n).long().tolist()):  # spread over classes
        ax = axes[0, col]
        img = px[i].permute(1, 2, 0).numpy()
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255)
        ax.set_axis_off()
        lines = [f"true {names[labels[i]][:12]}"] + [f"{a[:4]} {names[p[i]][:12]}" for a, p in preds.items()]
        ax.set_title("\n".join(lines), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
