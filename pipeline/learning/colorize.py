"""Colorization: grey image in, colour out, in the latent domain vs at 64x64 pixels.

    colour 256x256 crop --grey (ITU-R 601 luma, replicated to RGB by the pipeline)--> encode --> z_grey
                        --------------------------------------------------------> encode --> z_colour
    latent arm: z_grey (12x32x32) -> z_colour, regressing dequantized latents (standardized per
                channel), decoded with the same codec to 256x256 for PSNR and colourfulness
    pixel arm:  grey 3x64x64 -> colour 3x64x64, bicubic-upsampled to 256x256 for the same metrics

Both are scored at full 256x256 against the original colour crop. The report also gives the
ceilings (the codec's own reconstruction of z_colour; the colour image downsampled to 64 and back)
and the floors (the grey input decoded / upsampled, i.e. no colour predicted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from ..codec import WaLLoC  # noqa: E402
from ..config import DEFAULT_IMAGE_CODEC  # noqa: E402
from ..metrics import colourfulness, psnr  # noqa: E402
from ..preprocess.image import ImagePolicy, decode_image  # noqa: E402
from .data import (  # noqa: E402
    IMAGE_SIDE,
    PIXEL_SIDE,
    Standardizer,
    encode_folder,
    image_files,
    load_pixels,
    read_latents,
    run_info,
    source_path,
)
from .loop import LearnConfig, interleaved_speed, predict, train_arm  # noqa: E402
from .measure import pick_device  # noqa: E402
from .models import NetConfig, Translator  # noqa: E402
from .report import Report, job_config, summary_table, write_report  # noqa: E402


@dataclass
class ColorizeConfig:
    output: str = "out/learn-colorize"
    images: str | None = "data/imagenet-mini"  # colour photos; 256x256 crops + grey copies are encoded
    latents: str | None = None  # a run made by a previous call (its pairs/ folder must still exist)
    codec: str = DEFAULT_IMAGE_CODEC
    samples: int = 240  # training images (seeded choice from the folder)
    val_samples: int = 60
    device: str = "auto"
    net: NetConfig = field(default_factory=NetConfig)
    train: LearnConfig = field(default_factory=lambda: LearnConfig(epochs=8))


def build_pairs(
    images: str | Path, dest: Path, samples: int, val_samples: int, seed: int, progress: bool = False
) -> int:
    """Write 256x256 colour crops and their grey copies as dest/<split>/{colour,grey}/<n>.png.

    The crop is the pipeline's own (shorter side to 256, centre crop), so encoding the PNG again
    is lossless with respect to the crop and the 256x256 colour PNG is the ground truth."""
    files = image_files(images)
    if len(files) < samples + val_samples:
        raise ValueError(f"{images}: {len(files)} images, need {samples} + {val_samples}")
    g = torch.Generator().manual_seed(seed)
    chosen = [files[i] for i in torch.randperm(len(files), generator=g)[: samples + val_samples].tolist()]
    policy = ImagePolicy(size=IMAGE_SIDE, crop="center", channels=3)
    for n, path in enumerate(tqdm(chosen, desc="pairs", leave=False, disable=not progress)):
        split = "train" if n < samples else "val"
        rgb = Image.fromarray(decode_image(path.read_bytes(), policy).array.transpose(1, 2, 0))
        for kind, img in (("colour", rgb), ("grey", rgb.convert("L"))):
            out = dest / split / kind / f"{n:05d}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            if not out.exists():
                img.save(out)
    return len(chosen)


def decode_latents(codec: WaLLoC, z: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """Dequantized (float) latents -> RGB in [0, 1]; the codec's decode() without re-quantizing."""
    outs = []
    with torch.no_grad():
        for s in range(0, len(z), batch):
            x = codec.synthesize(codec.decoder(z[s : s + batch].float())).clamp(-0.5, 0.5)
            outs.append(x + 0.5)
    return torch.cat(outs)


def upsample(x: torch.Tensor, side: int = IMAGE_SIDE) -> torch.Tensor:
    """Pixels in [-0.5, 0.5] at 64 -> [0, 1] at 256 (bicubic, clamped)."""
    return (F.interpolate(x.float(), size=(side, side), mode="bicubic", align_corners=False) + 0.5).clamp(
        0, 1
    )


def mean_psnr(pred: torch.Tensor, truth: torch.Tensor) -> float:
    return float(np.mean([psnr(t[None], p[None]) for p, t in zip(pred, truth, strict=True)]))


def run(cfg: ColorizeConfig) -> Report:
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    progress = cfg.train.progress
    pairs = out / "pairs"
    if cfg.latents:
        root = cfg.latents
    elif cfg.images:
        build_pairs(cfg.images, pairs, cfg.samples, cfg.val_samples, cfg.train.seed, progress)
        root = encode_folder(pairs, out / "latents", cfg.codec)
    else:
        raise ValueError("give images (colour photos) or latents (a run of a previous colorize job)")
    ls = read_latents(root, progress)
    codec = run_info(root).codec(cfg.codec if cfg.codec != DEFAULT_IMAGE_CODEC else None)
    codec.eval()
    # pair grey and colour samples by split and file stem (paths: <split>/<kind>/<n>.png)
    rows: dict[tuple[str, str], dict[str, int]] = {}
    for i, m in enumerate(ls.meta):
        split, kind, name = Path(m["path"]).parts[-3:]
        rows.setdefault((split, Path(name).stem), {})[kind] = i
    pairs_by_split = {
        s: sorted((k, v) for k, v in rows.items() if k[0] == s and len(v) == 2) for s in ("train", "val")
    }
    tr = [v for _, v in pairs_by_split["train"]]
    va = [v for _, v in pairs_by_split["val"]]
    if not tr or not va:
        raise ValueError(f"{root}: needs train and val pairs of grey/colour samples")

    def z_of(idx: list[dict[str, int]], kind: str) -> torch.Tensor:
        return ls.z[torch.tensor([r[kind] for r in idx])]

    norm = Standardizer.fit(torch.cat([z_of(tr, "colour"), z_of(tr, "grey")]))
    zg_tr, zc_tr, zg_va, zc_va = (
        norm(z_of(s, k)) for s, k in ((tr, "grey"), (tr, "colour"), (va, "grey"), (va, "colour"))
    )

    def paths(idx: list[dict[str, int]], kind: str) -> list[Path]:
        return [source_path(ls.meta[r[kind]]) for r in idx]

    truth = load_pixels(paths(va, "colour"), IMAGE_SIDE, progress).float() / 255  # (N, 3, 256, 256) in [0, 1]
    px = {
        (s, k): load_pixels(paths(idx, k), PIXEL_SIDE, progress).float() / 255 - 0.5
        for s, idx in (("train", tr), ("val", va))
        for k in ("grey", "colour")
    }

    def score(rgb: torch.Tensor) -> dict[str, float]:
        return {"psnr_256": mean_psnr(rgb, truth), "colourfulness": colourfulness(rgb).mean().item()}

    arms, outputs = {}, {}
    trained = {}
    for name, x_tr, y_tr, x_va in [
        ("latent", zg_tr, zc_tr, zg_va),
        ("pixel", px[("train", "grey")], px[("train", "colour")], px[("val", "grey")]),
    ]:
        torch.manual_seed(cfg.train.seed)
        model = Translator(name, x_tr.shape[1], y_tr.shape[1], cfg.net)
        to_rgb = (lambda y: decode_latents(codec, norm.inverse(y))) if name == "latent" else upsample

        def evaluate(m, x_va=x_va, to_rgb=to_rgb):
            return score(to_rgb(predict(m, x_va, device)))

        arms[name] = train_arm(name, model, x_tr, y_tr, F.mse_loss, evaluate, cfg.train, device)
        trained[name] = (model, x_tr, y_tr)
        outputs[name] = to_rgb(predict(model, x_va, device))

    for name, speed in interleaved_speed(trained, F.mse_loss, cfg.train, device).items():
        arms[name].samples_per_s = speed
    extra = {
        "ground truth colourfulness (256x256 crops)": colourfulness(truth).mean().item(),
        "codec ceiling: colour latents decoded, PSNR": mean_psnr(
            decode_latents(codec, norm.inverse(zc_va)), truth
        ),
        "pixel ceiling: colour 64x64 upsampled, PSNR": mean_psnr(upsample(px[("val", "colour")]), truth),
        "latent floor: grey latents decoded (no colour), PSNR": mean_psnr(
            decode_latents(codec, norm.inverse(zg_va)), truth
        ),
        "pixel floor: grey 64x64 upsampled (no colour), PSNR": mean_psnr(
            upsample(px[("val", "grey")]), truth
        ),
    }
    report = Report(
        task="colorize",
        title="Colorization: grey -> colour in the latent domain (12x32x32) vs at 3x64x64 pixels",
        metric="psnr_256",
        arms=arms,
        data={
            "latents": root,
            "images": cfg.images,
            "train pairs": len(tr),
            "val pairs": len(va),
            "codec": f"{codec.name} ({codec.hash[:12]})",
        },
        notes=[
            "Targets: latent arm regresses the dequantized colour latents (per-channel standardized) "
            "with MSE and "
            "is decoded by the codec; pixel arm regresses colour pixels at 64x64 with MSE and is upsampled "
            "(bicubic) to 256. Both are scored against the original 256x256 colour crop.",
            "Grey input: ITU-R 601 luma (PIL 'L'), replicated to RGB by the pipeline's decoding rule "
            "before encoding.",
            "Plain MSE regression favours desaturated (mean) colours; compare colourfulness against "
            "the ground "
            "truth's, not only PSNR.",
            "Samples/s is the training step on tensors in memory (see benchmarks/loader_throughput.py "
            "for loading).",
        ],
        config=job_config("colorize", cfg, device),
        extra=extra,
        figures=[
            ("samples.png", "val: grey input, latent arm (decoded), pixel arm (upsampled), ground truth")
        ],
    )
    _plot_samples(upsample(px[("val", "grey")]), outputs, truth, out / "samples.png")
    write_report(report, out)
    print(summary_table(report))
    return report


def _plot_samples(grey: torch.Tensor, outputs: dict, truth: torch.Tensor, path: Path) -> None:
    n = min(6, len(truth))
    rows = [
        ("grey input (64, upsampled)", grey),
        ("latent arm", outputs["latent"]),
        ("pixel arm", outputs["pixel"]),
        ("ground truth", truth),
    ]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.9 * n, 1.9 * len(rows)), squeeze=False)
    for r, (label, imgs) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(imgs[c].permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
