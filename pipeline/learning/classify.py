"""Image classification on latents (12x32x32) vs pixels (3x64x64): same trunk, same budget.

Data: an ImageNet-layout folder (`train/<class>/*`, `val/<class>/*`; a folder without split
folders is split 80/20 by key), encoded by the pipeline, or an existing run (`latents`) whose
samples' source files are still on disk for the pixel arm. The default, data/imagenet-mini from
scripts/fetch_data.py, is not ImageNet: it holds seeded crops of ~50 real photographs grouped by
hand into 9 scene classes, and its val crops come from the same photographs as its train crops,
so its accuracy measures recognising scenes/photos seen in training, not category generalisation.
The report counts that overlap when the folder's CROPS.tsv is there.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ..config import image_codec_for  # noqa: E402
from ..metrics import accuracy  # noqa: E402
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
from .loop import LearnConfig, interleaved_speed, predict, train_arm  # noqa: E402
from .measure import pick_device  # noqa: E402
from .models import Classifier, NetConfig  # noqa: E402
from .report import Report, job_config, summary_table, write_report  # noqa: E402


@dataclass
class ClassifyConfig:
    output: str = "out/learn-classify"
    images: str | None = "data/imagenet-mini"  # encoded into <output>/latents unless `latents` is given
    latents: str | None = None  # an existing pipeline run (WebDataset) to train from
    codec: str | None = None  # None: the bundled codec for the images' channels (image_codec_for)
    samples: int | None = None  # cap on training samples (seeded choice); None = all
    device: str = "auto"
    net: NetConfig = field(default_factory=NetConfig)
    train: LearnConfig = field(default_factory=lambda: LearnConfig(epochs=8))


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


def run(cfg: ClassifyConfig) -> Report:
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    progress = cfg.train.progress
    if cfg.latents:
        root = cfg.latents
    elif cfg.images:
        codec = cfg.codec or image_codec_for(image_channels(image_files(cfg.images)))
        root = encode_folder(cfg.images, out / "latents", codec)
    else:
        raise ValueError("give images (a folder to encode) or latents (a pipeline run)")
    ls = read_latents(root, progress)
    label_map = run_info(root).label_map
    tr, va = split_rows(ls)
    if cfg.samples is not None and cfg.samples < len(tr):
        g = torch.Generator().manual_seed(cfg.train.seed)
        tr = sorted(tr[i] for i in torch.randperm(len(tr), generator=g)[: cfg.samples].tolist())
    train, val = ls.select(tr), ls.select(va)
    if (train.labels < 0).any():
        raise ValueError(f"{root}: unlabelled samples; classification needs class folders")
    classes = len(label_map)
    channels = int(run_info(root).manifest["codec"]["config"]["channels"])  # the pixel arm's, too
    paths_train, paths_val = [source_path(m) for m in train.meta], [source_path(m) for m in val.meta]
    px_train = to_model_pixels(load_pixels(paths_train, PIXEL_SIDE, progress, channels))
    px_val_u8 = load_pixels(paths_val, PIXEL_SIDE, progress, channels)
    px_val = to_model_pixels(px_val_u8)

    norm = Standardizer.fit(train.z)  # per-channel: dequantized channels' scales differ ~25x
    arms, preds = {}, {}
    trained = {}
    for name, x_tr, x_va, in_ch in [
        ("latent", norm(train.z), norm(val.z), train.z.shape[1]),
        ("pixel", px_train, px_val, channels),
    ]:
        torch.manual_seed(cfg.train.seed)
        model = Classifier(name, in_ch, classes, cfg.net)

        def evaluate(m, x_va=x_va):
            logits = predict(m, x_va, device)
            return {
                "accuracy": accuracy(logits, val.labels),
                "val_loss": F.cross_entropy(logits, val.labels).item(),
            }

        arms[name] = train_arm(name, model, x_tr, train.labels, F.cross_entropy, evaluate, cfg.train, device)
        trained[name] = (model, x_tr, train.labels)
        preds[name] = predict(model, x_va, device).argmax(1)

    for name, speed in interleaved_speed(trained, F.cross_entropy, cfg.train, device).items():
        arms[name].samples_per_s = speed
    images = Path(cfg.images) if cfg.images else None
    names = class_names(images, label_map)
    overlap = photo_overlap(
        images, [m.get("path", "") for m in train.meta], [m.get("path", "") for m in val.meta]
    )
    chance = torch.bincount(val.labels, minlength=classes).max().item() / len(val.labels)
    report = Report(
        task="classify",
        title=f"Image classification: latents ({'x'.join(map(str, train.z.shape[1:]))}) vs pixels"
        f" ({channels}x{PIXEL_SIDE}x{PIXEL_SIDE}), same trunk",
        metric="accuracy",
        arms=arms,
        data={
            "latents": root,
            "codec": run_info(root).manifest["codec"].get("name"),
            "images": cfg.images,
            "classes": classes,
            "class names": ", ".join(names),
            "train samples": len(tr),
            "val samples": len(va),
            "majority-class val accuracy": round(chance, 4),
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
        notes=_notes(cfg, overlap, tuple(train.z.shape[1:]), channels),
        config=job_config("classify", cfg, device),
        figures=[("samples.png", "val images (64x64 pixel input) with true / latent / pixel predictions")],
    )
    _plot_samples(px_val_u8, val.labels, preds, names, out / "samples.png")
    write_report(report, out)
    print(summary_table(report))
    return report


def _notes(cfg: ClassifyConfig, overlap: dict | None, latent: tuple[int, ...], channels: int) -> list[str]:
    notes = [
        "Both arms: the same residual trunk and head, same optimizer, epochs and seed; only the stem "
        f"differs (3x3 conv on {'x'.join(map(str, latent))} latents, 4x4 stride-2 conv on "
        f"{channels}x{PIXEL_SIDE}x{PIXEL_SIDE} pixels). No augmentation.",
        "Samples/s is the training step (forward, backward, optimizer) on tensors in memory; reading "
        "latent shards vs decoding JPEGs is measured by benchmarks/loader_throughput.py.",
    ]
    if cfg.images and "imagenet-mini" in str(cfg.images):
        notes.append(
            "Weak labels: data/imagenet-mini is not ImageNet. It is seeded 256-400 px crops of ~50 real "
            "photographs (scikit-image, Debian wallpapers), each photograph assigned by hand to one of 9 "
            "scene groups; the class of a crop is its photograph's group."
        )
    if overlap and overlap["val_crops_from_train_photos"]:
        notes.append(
            "Train/val leak by construction: most val crops come from photographs that also give train "
            "crops, "
            "so val accuracy measures recognising scenes seen in training, not generalising to new photos."
        )
    return notes


def _plot_samples(px: torch.Tensor, labels: torch.Tensor, preds: dict, names: list[str], path: Path) -> None:
    n = min(8, len(px))
    fig, axes = plt.subplots(1, n, figsize=(2 * n, 2.6), squeeze=False)
    for col, i in enumerate(torch.linspace(0, len(px) - 1, n).long().tolist()):  # spread over classes
        ax = axes[0, col]
        img = px[i].permute(1, 2, 0).numpy()
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255)
        ax.set_axis_off()
        ax.set_title(
            f"true {names[labels[i]][:12]}\nlat {names[preds['latent'][i]][:12]}"
            f"\npix {names[preds['pixel'][i]][:12]}",
            fontsize=7,
        )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
