"""Music source separation from the mixture's audio latents, against the waveform at the same input budget.

    stems root (MUSDB layout, scripts/make_stems.py) --encode pipeline (musdb source, stereo-44k-klt)-->
        WebDataset shards: per window, latents of the mixture and of every stem (108 x T, int8)

    latent arm:   mixture latents (108 x 258, dequantized) -> Separator1d -> 3 x 108 x 258 stem latents
                  -> the codec's decoder + inverse WPT -> 3 stereo waveforms at 44.1 kHz
    waveform arm: mixture waveform resampled by 27/128 (9.3 kHz) and folded into 108 x 256 (54 phases
                  per channel: the same tensor size as the latents) -> Separator1d -> 3 x 108 x 256
                  -> unfolded and resampled back to 44.1 kHz

Both arms use the same network (a 1-D residual conv net over time, channels in = channels out per
stem), the same optimiser, batches and epochs; they differ only in what the 108 values per time step
are. Input budget: one window of 2^16 stereo samples is 131,072 values; the codec gives 108 x 258 =
27,864 (two of the 258 steps are the 1x1 encoder's padding frames), the waveform arm 108 x 256 =
27,648. We chose the downsampled waveform rather than an STFT of the same size because an STFT
that small (e.g. 54 bins x 256 frames x 2 channels) would need a phase model or the mixture's phase
to get back to a waveform, which adds a design choice the latent arm does not need; the folded
waveform is invertible up to the band it keeps (4.65 kHz), and its ceiling is measured and reported.

Targets: the pipeline peak-normalises every window of every stem on its own and records the scale,
so a stem's stored latents are at its own loudness, not at its share of the mixture. Both arms are
trained to predict each stem at the mixture's normalisation: the waveform arm's target is the folded
stem times scale_mixture / scale_stem; the latent arm's is the stem's dequantized latents scaled
the same way about the latents of silence (analysis and the 1x1 encoder are linear, dequantizing
undoes the companding up to rounding and tail saturation), so in both domains the mixture is
(nearly) the sum of the targets. Each arm is trained on its own domain's mean squared error (inputs
and targets divided by one scalar each, from the training set), scored by SI-SDR on held-out tracks
at 44.1 kHz over each window's valid samples (contract C6). Reference points: the mixture itself as
the estimate, and each arm's ceiling (the true stem through the codec, and through the 27/128
resampling).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..config import DEFAULT_AUDIO_CODEC, EncodeConfig
from .audio_metrics import si_sdr_batch

STEMS = ("vocals", "bass", "other")  # predicted, in this order (MUSDB names; no drums in the rendered set)
RATE = 44100


@dataclass(frozen=True)
class SeparateConfig:
    stems: str = "data/stems"  # MUSDB-layout root: <split>/<track>/{mixture,vocals,bass,other}.flac
    output: str = "out/learn-separate"  # report, plots; the encoded latents go to <output>/latents
    latents: str | None = None  # an existing encode of `stems` (same window); None: encode it here
    codec: str = DEFAULT_AUDIO_CODEC
    window: int = 2**16  # samples per window at 44.1 kHz (1.49 s): 108 x 258 latents
    train_windows: int | None = None  # cap on training windows (None: all)
    width: int = 64  # conv channels of the separator
    blocks: int = 4  # residual blocks, dilations 1, 2, 4, 8, 1, ...
    epochs: int = 20
    eval_every: int = 5  # score the held-out windows every this many epochs (and after the last)
    batch_size: int = 16
    lr: float = 2e-3
    seed: int = 0
    device: str = "auto"
    workers: int | None = None  # Ray encoder actors (None: one per CPU)
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------------
# Data


@dataclass
class Windows:
    """Aligned windows of one split: mixture + stems, as latents and as waveforms."""

    names: list[str]  # <track>@<offset>
    valid: np.ndarray  # (N,) valid samples of each window (C6 valid_length)
    z_mix: Tensor  # (N, C, T) dequantized latents of the mixture
    z_stems: Tensor  # (N, S, C, T) dequantized latents of the stems
    w_mix: Tensor  # (N, C, T') folded, downsampled mixture waveform (the waveform arm's input)
    w_stems: Tensor  # (N, S, C, T') the same for the stems
    ratio: Tensor  # (N, S) mixture's scale / stem's scale: brings a stem to the mixture's normalisation
    truth: np.ndarray | None = None  # (N, S, 2, window) stems at 44.1 kHz (kept for held-out windows)
    mixture: np.ndarray | None = None  # (N, 2, window)


class WaveFold:
    """Waveform <-> a C x T tensor of the latents' size: resample by C*T/(channels*window), then fold
    P = C / channels consecutive samples of each channel into P channels (a polyphase split)."""

    def __init__(self, channels: int, latent_channels: int, window: int, J: int):
        if latent_channels % channels:
            raise ValueError(f"{latent_channels} latent channels do not split over {channels} audio channels")
        self.channels, self.phases, self.window = channels, latent_channels // channels, window
        self.steps = window >> J
        ratio = Fraction(self.phases * self.steps, window)
        self.up, self.down = ratio.numerator, ratio.denominator

    @property
    def rate(self) -> float:
        return RATE * self.up / self.down

    def fold(self, x: np.ndarray) -> np.ndarray:
        """(channels, window) -> (channels * phases, steps)."""
        from scipy.signal import resample_poly

        y = resample_poly(x, self.up, self.down, axis=-1)[:, : self.phases * self.steps]
        return y.reshape(self.channels, self.steps, self.phases).transpose(0, 2, 1).reshape(-1, self.steps)

    def unfold(self, y: np.ndarray) -> np.ndarray:
        """(..., channels * phases, steps) -> (..., channels, window)."""
        from scipy.signal import resample_poly

        lead = y.shape[:-2]
        x = y.reshape(*lead, self.channels, self.phases, self.steps).swapaxes(-1, -2)
        x = x.reshape(*lead, self.channels, self.phases * self.steps)
        return resample_poly(x, self.down, self.up, axis=-1)[..., : self.window]


def encode_stems(cfg: SeparateConfig) -> str:
    """Run the encode pipeline (local Ray, musdb source) over the stems root; resumes a finished run."""
    from ..runtime import run_encode  # Ray is imported only when encoding

    out = str(Path(cfg.output) / "latents")
    enc = EncodeConfig(
        input=cfg.stems,
        output=out,
        source="musdb",
        codec=cfg.codec,
        window=cfg.window,
        shard_size=256,
        mode="resume",
        workers=cfg.workers,
        progress=cfg.progress,
    )
    summary = run_encode(enc)
    if summary.failed_shards or summary.errors:
        raise RuntimeError(f"encoding {cfg.stems} failed for some inputs:\n{summary.format()}")
    return out


def read_audio_latents(root: str, progress: bool = False) -> tuple[Tensor, list[dict[str, Any]]]:
    """Every sample of a WebDataset run (sha256-checked by the loader): dequantized latents (N, C, T)
    and metadata, in key order. The loader's mask (Batch.mask) is not used here: scoring cuts each
    window at its `valid_length` (contract C6), which the metadata carries."""
    from ..loaders import LatentWebDataset

    data = LatentWebDataset(root, output="float", with_meta=True, shuffle_shards=False)
    items = tqdm(data, desc="latents", disable=not progress)
    rows = sorted(((b.key, b.latents, b.meta) for b in items), key=lambda r: r[0])
    if not rows:
        raise ValueError(f"{root}: no samples")
    return torch.stack([torch.as_tensor(r[1]) for r in rows]).float(), [r[2] for r in rows]


def load_windows(latent_root: str, cfg: SeparateConfig, fold: WaveFold) -> dict[str, Windows]:
    """Latents from the pipeline's shards, matched per (split, track, offset) to the same windows of
    the FLAC files decoded with the pipeline's own audio rule (so both arms see identical windows)."""
    from ..preprocess.audio import AudioPolicy, decode_audio
    from ..sources.audio import MusdbSource

    z_all, metas = read_audio_latents(latent_root, cfg.progress)
    by_window: dict[tuple[str, str, int], dict[str, int]] = {}
    for i, meta in enumerate(metas):
        by_window.setdefault((meta["split"], meta["track"], int(meta["offset"])), {})[meta["stem"]] = i
    source = MusdbSource(cfg.stems, window=cfg.window, sample_rate=RATE)
    items = {
        (i.meta["split"], i.meta["track"], i.meta["offset"], i.meta["stem"]): i for i in source.list_items()
    }
    policy = AudioPolicy(sample_rate=RATE, window=cfg.window, hop=cfg.window, channels=fold.channels)
    complete = sorted(k for k, v in by_window.items() if all(s in v for s in ("mixture", *STEMS)))
    splits: dict[str, list[tuple[str, str, int]]] = {}
    for key in complete:
        splits.setdefault(key[0], []).append(key)
    if "train" not in splits or "test" not in splits:
        raise ValueError(
            f"{cfg.stems}: need train/ and test/ tracks with mixture + {STEMS}; found {sorted(splits)}"
        )
    rng = np.random.default_rng(cfg.seed)
    if cfg.train_windows is not None and cfg.train_windows < len(splits["train"]):
        chosen = rng.choice(len(splits["train"]), cfg.train_windows, replace=False)
        splits["train"] = [splits["train"][i] for i in sorted(chosen)]
    out = {}
    for split, keys in splits.items():
        keep_truth = split != "train"
        valid, w_mix, w_stems, truth, mixture = [], [], [], [], []
        for key in tqdm(keys, desc=f"waveforms {split}", disable=not cfg.progress, leave=False):
            signals = []
            for stem in ("mixture", *STEMS):
                item = items[(*key, stem)]
                signals.append(decode_audio(source.read_bytes(item), policy, item.meta).array)
            valid.append(int(metas[by_window[key]["mixture"]]["valid_length"]))
            w_mix.append(fold.fold(signals[0]).astype(np.float32))
            w_stems.append(np.stack([fold.fold(x) for x in signals[1:]]).astype(np.float32))
            if keep_truth:  # full-rate copies only where they are scored (bounded memory for training)
                mixture.append(signals[0])
                truth.append(np.stack(signals[1:]))
        rows = [[by_window[k][s] for s in ("mixture", *STEMS)] for k in keys]
        z = z_all[torch.as_tensor(rows)]  # (N, 1 + S, C, T)
        scales = torch.tensor([[float(metas[i]["scale"]) for i in r] for r in rows], dtype=torch.float64)
        out[split] = Windows(
            names=[f"{k[1]}@{k[2]}" for k in keys],
            valid=np.asarray(valid),
            z_mix=z[:, 0].contiguous(),
            z_stems=z[:, 1:].contiguous(),
            w_mix=torch.from_numpy(np.stack(w_mix)),
            w_stems=torch.from_numpy(np.stack(w_stems)),
            ratio=(scales[:, :1] / scales[:, 1:]).float(),
            truth=np.stack(truth) if keep_truth else None,
            mixture=np.stack(mixture) if keep_truth else None,
        )
    return out


def cached_windows(latent_root: str, cfg: SeparateConfig, fold: WaveFold) -> dict[str, Windows]:
    """load_windows, kept in <output>/windows-<hash>.npz: the hash covers the run's manifest and every
    setting that changes the windows, so a rerun with other training flags skips the audio decoding."""
    import hashlib

    manifest = (Path(latent_root) / "manifest.json").read_bytes()
    settings = json.dumps([cfg.stems, cfg.window, cfg.train_windows, cfg.seed, fold.up, fold.down])
    digest = hashlib.sha256(manifest + settings.encode()).hexdigest()[:16]
    path = Path(cfg.output) / f"windows-{digest}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as f:
            return {split: _windows_from(f, split) for split in ("train", "test")}
    data = load_windows(latent_root, cfg, fold)
    arrays = {}
    for split, w in data.items():
        for name, value in vars(w).items():
            if value is not None:
                arrays[f"{split}/{name}"] = value.numpy() if isinstance(value, Tensor) else np.asarray(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return data


def _windows_from(f, split: str) -> Windows:
    get = {k.split("/", 1)[1]: f[k] for k in f.files if k.startswith(split + "/")}
    tensors = ("z_mix", "z_stems", "w_mix", "w_stems", "ratio")
    return Windows(
        names=[str(n) for n in get["names"]],
        valid=get["valid"],
        **{k: torch.from_numpy(get[k]) for k in tensors},
        truth=get.get("truth"),
        mixture=get.get("mixture"),
    )


# ---------------------------------------------------------------------------------------------------------
# Model


class ResBlock1d(nn.Module):
    def __init__(self, width: int, dilation: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm1d(width),
            nn.GELU(),
            nn.Conv1d(width, width, 3, padding=dilation, dilation=dilation),
            nn.BatchNorm1d(width),
            nn.GELU(),
            nn.Conv1d(width, width, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class Separator1d(nn.Module):
    """(B, C, T) mixture -> (B, S * C, T) stems, the same network for latents and folded waveforms:
    3-tap conv stem, residual blocks with dilations 1, 2, 4, 8 (receptive field 31 steps + 2), 1x1 head."""

    def __init__(self, channels: int, stems: int, width: int, blocks: int):
        super().__init__()
        self.stem = nn.Conv1d(channels, width, 3, padding=1)
        self.blocks = nn.Sequential(*[ResBlock1d(width, 2 ** (i % 4)) for i in range(blocks)])
        self.head = nn.Sequential(nn.BatchNorm1d(width), nn.GELU(), nn.Conv1d(width, stems * channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)))


# ---------------------------------------------------------------------------------------------------------
# Arms


@dataclass
class Arm:
    """One arm's tensors (scaled by one scalar each) and how its outputs become 44.1 kHz waveforms."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    x_scale: float
    y_scale: float
    to_wave: Any  # (N, S, C, T) unscaled predictions -> (N, S, 2, window)


def silent_latents(codec, window: int) -> Tensor:
    """Dequantized latents of a silent window (the encoder's bias, through the quantizer): the point
    about which latents scale with the signal (analysis and the 1x1 encoder are linear; the companding
    is undone by dequantizing, up to rounding and its saturation far in the tails)."""
    zeros = torch.zeros(1, codec.config.channels, window)
    return codec.compander.to_normal(codec.encode(zeros).float())[0]


def make_arm(name: str, x: Tensor, y: Tensor, x_test: Tensor, to_wave) -> Arm:
    x_scale, y_scale = float(x.std()) or 1.0, float(y.std()) or 1.0
    return Arm(name, x / x_scale, y.flatten(1, 2) / y_scale, x_test / x_scale, x_scale, y_scale, to_wave)


def latent_to_wave(codec, window: int, batch: int = 32):
    """Dequantized latents -> waveforms with the codec's decoder + inverse WPT (clamped like decode)."""

    def run(z: Tensor) -> np.ndarray:
        flat = z.flatten(0, 1)
        out = []
        with torch.no_grad():
            for start in range(0, len(flat), batch):
                x = codec.synthesize(codec.decoder(flat[start : start + batch].float())).clamp(-0.5, 0.5)
                out.append(codec.crop(x, (window,)).numpy())
        return np.concatenate(out).reshape(*z.shape[:2], -1, window)

    return run


def fold_to_wave(fold: WaveFold):
    def run(y: Tensor) -> np.ndarray:
        return fold.unfold(y.numpy().astype(np.float64)).astype(np.float32)

    return run


def stem_scores(estimates: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """Mean SI-SDR per stem over the windows where that stem sounds, and their mean."""
    scores = {}
    for s, stem in enumerate(STEMS):
        values = si_sdr_batch(estimates[:, s], truth[:, s], valid)
        scores[f"si_sdr_{stem}"] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    scores["si_sdr"] = float(np.nanmean([scores[f"si_sdr_{s}"] for s in STEMS]))
    return scores


def run_separation(cfg: SeparateConfig) -> dict[str, Any]:
    """Encode (or reuse) the latents, train both arms, write the report; returns report.json's content."""
    from .. import codec as wc
    from .loop import TrainConfig, interleaved_speed, predict, train_arm
    from .measure import pick_device
    from .report import Report, write_report

    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    out = Path(cfg.output)
    t0 = time.perf_counter()
    latent_root = cfg.latents or encode_stems(cfg)
    encode_s = time.perf_counter() - t0
    codec = wc.load(cfg.codec)
    if cfg.window % 2**codec.config.J:
        raise ValueError(f"--window must be a multiple of 2^J = {2**codec.config.J}")
    fold = WaveFold(codec.config.channels, codec.config.latent_dim, cfg.window, codec.config.J)
    t0 = time.perf_counter()
    data = cached_windows(latent_root, cfg, fold)
    load_s = time.perf_counter() - t0
    train, test = data["train"], data["test"]
    S, C = len(STEMS), codec.config.latent_dim
    silence = silent_latents(codec, cfg.window)
    ratio = train.ratio[:, :, None, None]
    arms = {
        "latent": make_arm(
            "latent",
            train.z_mix,
            (train.z_stems - silence) * ratio + silence,
            test.z_mix,
            latent_to_wave(codec, cfg.window),
        ),
        "waveform": make_arm("waveform", train.w_mix, train.w_stems * ratio, test.w_mix, fold_to_wave(fold)),
    }
    tcfg = TrainConfig(
        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, progress=cfg.progress
    )
    results, estimates, trained = {}, {}, {}
    for name, arm in arms.items():
        model = Separator1d(C, S, cfg.width, cfg.blocks)

        def waves(model: nn.Module, arm: Arm = arm) -> np.ndarray:
            y = predict(model, arm.x_test, device, batch_size=cfg.batch_size) * arm.y_scale
            return arm.to_wave(y.reshape(len(y), S, C, -1))

        epoch = iter(range(1, cfg.epochs + 1))

        def evaluate(model: nn.Module, waves=waves, epoch=epoch) -> dict[str, float]:
            e = next(epoch)
            if e % max(1, cfg.eval_every) and e != cfg.epochs:
                return {}  # not scored this epoch (the curves skip it)
            return stem_scores(waves(model), test.truth, test.valid)

        results[name] = train_arm(
            name, model, arm.x_train, arm.y_train, nn.functional.mse_loss, evaluate, tcfg, device
        )
        estimates[name] = waves(model)
        trained[name] = (model, arm.x_train, arm.y_train)
    for name, speed in interleaved_speed(trained, nn.functional.mse_loss, tcfg, device).items():
        results[name].samples_per_s = speed  # same machine load for both arms (see loop.interleaved_speed)

    references = reference_points(codec, test, fold)
    extra = {f"{ref} {k}": round(v, 2) for ref, scores in references.items() for k, v in scores.items()}
    extra |= {
        "encode seconds (pipeline, local Ray)": round(encode_s, 1),
        "load + waveform prep seconds": round(load_s, 1),
    }
    sources = Path(cfg.stems) / "SOURCES.json"
    report = Report(
        task="separate",
        title="Music source separation: audio latents vs waveform at the same input budget",
        metric="si_sdr",
        arms=results,
        data={
            "stems root": cfg.stems,
            "latents": latent_root,
            "train windows": len(train.names),
            "test windows": len(test.names),
            "test tracks": len({n.split("@")[0] for n in test.names}),
            "window": f"{cfg.window} samples ({cfg.window / RATE:.2f} s) at {RATE} Hz, stereo",
            "stems": ", ".join(STEMS),
            "sources": json.loads(sources.read_text()) if sources.is_file() else "not recorded",
        },
        notes=[
            "Data: Bach chorales from music21's corpus rendered per voice with FluidR3_GM (TinySoundFont):"
            " true stems, but synthetic performances (no reverb, no singing voice); vocals = soprano"
            " line, other = alto + tenor, bass = bass.",
            f"Waveform arm: resampled to {fold.rate:.0f} Hz ({fold.up}/{fold.down}) and folded into"
            f" {C} x {fold.steps}; its ceiling (true stems through that resampling) is a reference point.",
            "si_sdr is the mean over stems of each stem's mean SI-SDR over held-out windows (dB,"
            " valid samples only); each arm's own loss is MSE in its own domain.",
            "Both arms run the same network on tensors of the same size (108 x 258 vs 108 x 256), so their"
            " training steps cost the same; what differs is getting the input: latents are read from the"
            " shards, the waveform arm decodes FLAC and resamples (once here, cached in windows-*.npz).",
        ],
        config=cfg.to_dict() | {"device": str(device)},
        extra=extra,
        figures=[("spectrogram.png", "a held-out window: mixture, true stems and both arms' estimates")],
    )
    out.mkdir(parents=True, exist_ok=True)
    plot_spectrograms(test, estimates, out / "spectrogram.png")
    write_report(report, out)
    return report.to_dict()


def reference_points(codec, test: Windows, fold: WaveFold) -> dict[str, dict[str, float]]:
    """SI-SDR of the mixture as the estimate and of each arm's ceiling (true stems through its domain)."""
    S = len(STEMS)
    mixture = np.repeat(test.mixture[:, None], S, axis=1)
    codec_ceiling = latent_to_wave(codec, test.truth.shape[-1])(test.z_stems)
    fold_ceiling = fold_to_wave(fold)(test.w_stems)
    return {
        "mixture as estimate": stem_scores(mixture, test.truth, test.valid),
        "latent ceiling (true stem latents decoded)": stem_scores(codec_ceiling, test.truth, test.valid),
        "waveform ceiling (true stems resampled)": stem_scores(fold_ceiling, test.truth, test.valid),
    }


def plot_spectrograms(test: Windows, estimates: dict[str, np.ndarray], path: Path) -> None:
    """Rows: stems; columns: truth and each arm's estimate; the mixture in the top-left panel's title row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    i = int(np.argmax(test.valid))  # a full window
    cols = ["mixture", "truth", *estimates]
    fig, axes = plt.subplots(
        len(STEMS), len(cols), figsize=(3.2 * len(cols), 2.4 * len(STEMS)), squeeze=False
    )
    for r, stem in enumerate(STEMS):
        panels = [test.mixture[i], test.truth[i, r], *[e[i, r] for e in estimates.values()]]
        for c, (title, x) in enumerate(zip(cols, panels, strict=True)):
            ax = axes[r, c]
            ax.specgram(x.mean(axis=0), NFFT=1024, Fs=RATE, noverlap=768, cmap="magma", vmin=-140)
            ax.set_ylim(0, 8000)
            ax.set_title(f"{stem}: {title}" if c else f"{title} ({test.names[i]})", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
