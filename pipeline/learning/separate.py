"""Music source separation from the mixture's audio latents, against the waveform at the same input budget.

    stems root (MUSDB layout, scripts/make_stems.py) --encode pipeline (musdb source, stereo-44k-klt)-->
        WebDataset runs <output>/latents/{train,test}: one sample per window holding the latents of the
        mixture and of every stem (<key>.mixture.latent.npy, <key>.vocals.latent.npy, ...), read back
        through the stock LatentWebDataset as (B, S, 108, T) batches, shuffled per epoch

    latent arm:   mixture latents (108 x 258, dequantized) -> Separator1d -> 3 x 108 x 258 stem latents
                  -> the codec's decoder + inverse WPT -> 3 stereo waveforms at 44.1 kHz
    waveform arm: mixture waveform resampled by 27/128 (9.3 kHz) and folded into 108 x 256 (54 phases
                  per channel: the same tensor size as the latents) -> Separator1d -> 3 x 108 x 256
                  -> unfolded and resampled back to 44.1 kHz
    full arm:     the 44.1 kHz waveform folded into 512 x 256 (256 phases per channel: 4.7x the values,
                  nothing lost; the ceiling) -> Separator1d -> 3 x 512 x 256 -> unfolded

Both arms use the same network (a 1-D residual conv net over time, channels in = channels out per
stem), the same optimiser, batches and epochs; they differ only in what the 108 values per time step
are. Input budget: one window of 2^16 stereo samples is 131,072 values; the codec gives 108 x 258 =
27,864 (two of the 258 steps are the 1x1 encoder's padding frames), the waveform arm 108 x 256 =
27,648. We chose the downsampled waveform rather than an STFT of the same size because an STFT
that small (e.g. 54 bins x 256 frames x 2 channels) would need a phase model or the mixture's phase
to get back to a waveform, which adds a design choice the latent arm does not need; the folded
waveform is invertible up to the band it keeps (4.65 kHz), and its ceiling is measured and reported.

Targets: the pipeline normalises the stems of a window jointly (each stem's mean removed, one scale
for all of them: pipeline.preprocess.audio.decode_stems), so every stem's stored latents are at its
share of the mixture, and the mixture is (nearly) the sum of the stems in both domains (analysis
and the 1x1 encoder are linear, dequantizing undoes the companding up to rounding and tail
saturation). The targets are the stems' dequantized latents and folded waveforms as stored / decoded.
Each arm is trained on its own domain's mean squared error, scored by SI-SDR on held-out tracks
at 44.1 kHz over each window's valid samples (contract C6). Reference points: the mixture itself as
the estimate, and each arm's ceiling (the true stem through the codec, and through the 27/128
resampling).

Normalisation: the waveform arms divide inputs and targets by one scalar each, from the first
training batches (they are not latents: the manifest has no statistics of them). The latent arm does
the same by default (latent_norm="scalar"); latent_norm="channel" uses the run manifest's per-channel
statistics instead (LatentNorm.from_run: no extra pass over the data). Stem: every arm starts with a
3-tap conv by default (latent_stem="conv"); latent_stem="mix" / "mixlin" / "mixres" give the latent
arm a stem that mixes its channels per time step first (Separator1d). Neither option measured better
than the defaults at 3 seeds (docs/learning-audio.md), so the defaults stay the old rule.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..config import DEFAULT_AUDIO_CODEC, AudioSettings, EncodeConfig, RayConfig
from ..metrics import si_sdr_batch
from ..sinks import SinkSpec

STEMS = ("vocals", "bass", "other")  # predicted, in this order (MUSDB names; no drums in the rendered set)
RATE = 44100
LATENT_NORMS = ("channel", "scalar")  # SeparateConfig.latent_norm
STEM_KINDS = ("mix", "conv", "mixlin", "mixres")  # SeparateConfig.latent_stem / Separator1d(stem=...)


@dataclass(frozen=True)
class SeparateConfig:
    stems: str = "data/stems"  # MUSDB-layout root: <split>/<track>/{mixture,vocals,bass,other}.flac
    output: str = "out/learn-separate"  # report, plots; the encoded latents go to <output>/latents
    latents: str | None = (
        None  # an existing encode of `stems` (same window): <latents>/{train,test}; None: here
    )
    codec: str = DEFAULT_AUDIO_CODEC
    window: int = 2**16  # samples per window at 44.1 kHz (1.49 s): 108 x 258 latents
    train_windows: int | None = None  # cap on training windows (None: all)
    width: int = 64  # conv channels of the separator
    blocks: int = 4  # residual blocks, dilations 1, 2, 4, 8, 1, ...
    epochs: int = 20
    eval_every: int = 5  # score the held-out windows every this many epochs (and after the last)
    batch_size: int = 16
    shuffle_buffer: int = (
        256  # the loader's: windows shuffled within blocks of this many (shards shuffled too)
    )
    lr: float = 2e-3
    seed: int = 0
    device: str = "auto"
    workers: int | None = None  # Ray encoder actors (None: one per CPU)
    progress: bool = True
    full_arm: bool = True  # also train on the 44.1 kHz waveform itself (2^J x the values: the ceiling arm)
    waveform_arm: bool = True  # train the same-size waveform arm (False: the latent arm alone, e.g. a rerun)
    # latent arm only (docs/learning-audio.md measures them; neither beat these defaults at 3 seeds):
    latent_norm: str = "scalar"  # "scalar": one std per side; "channel": manifest statistics (LatentNorm)
    latent_stem: str = "conv"  # "conv": 3-tap conv as every arm; "mix" / "mixlin" / "mixres": Separator1d

    def __post_init__(self) -> None:
        if self.latent_norm not in LATENT_NORMS:
            raise ValueError(f"latent_norm must be one of {LATENT_NORMS}, not {self.latent_norm!r}")
        if self.latent_stem not in STEM_KINDS:
            raise ValueError(f"latent_stem must be one of {STEM_KINDS}, not {self.latent_stem!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------------
# Data


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
        """(..., channels, window) -> (..., channels * phases, steps)."""
        from scipy.signal import resample_poly

        lead = x.shape[:-2]
        y = resample_poly(x, self.up, self.down, axis=-1)[..., : self.phases * self.steps]
        y = y.reshape(*lead, self.channels, self.steps, self.phases).swapaxes(-1, -2)
        return y.reshape(*lead, -1, self.steps)

    def unfold(self, y: np.ndarray) -> np.ndarray:
        """(..., channels * phases, steps) -> (..., channels, window)."""
        from scipy.signal import resample_poly

        lead = y.shape[:-2]
        x = y.reshape(*lead, self.channels, self.phases, self.steps).swapaxes(-1, -2)
        x = x.reshape(*lead, self.channels, self.phases * self.steps)
        return resample_poly(x, self.down, self.up, axis=-1)[..., : self.window]


SPLITS = ("train", "test")


def encode_stems(cfg: SeparateConfig) -> str:
    """Run the encode pipeline (local Ray, musdb source: one sample per window holding the mixture and
    every stem) over each split of the stems root, into <output>/latents/<split>; resumes a finished run."""
    from ..runtime import run_encode  # Ray is imported only when encoding

    out = Path(cfg.output) / "latents"
    for split in SPLITS:
        enc = EncodeConfig(
            input=cfg.stems,
            sink=SinkSpec(output=str(out / split), shard_size=256),
            source="musdb",
            source_options={"split": split},
            codec=cfg.codec,
            audio=AudioSettings(window=cfg.window),
            mode="resume",
            ray=RayConfig(workers=cfg.workers),
            progress=cfg.progress,
        )
        summary = run_encode(enc)
        if summary.failed_shards or summary.errors:
            raise RuntimeError(f"encoding {cfg.stems} ({split}) failed for some inputs:\n{summary.format()}")
    return str(out)


def stem_rows(stems: list[str] | None, root: str) -> tuple[int, list[int]]:
    """Rows of the mixture and of STEMS in a grouped run's (S, C, T) latents."""
    need = ("mixture", *STEMS)
    if not stems or any(s not in stems for s in need):
        raise ValueError(
            f"{root}: needs a musdb run whose samples hold {list(need)} (grouped stems), it holds "
            f"{stems or 'one signal per sample'}; re-encode it (pipeline musdb source, group=True)"
        )
    return stems.index("mixture"), [stems.index(s) for s in STEMS]


def split_loader(root: str, cfg: SeparateConfig, shuffle: bool):
    """The stock latent loader over one split's run: dequantized (B, S, C, T) grouped windows."""
    from ..loaders import LatentWebDataset

    return LatentWebDataset(
        root,
        output="float",
        batch_size=cfg.batch_size,
        shuffle_shards=shuffle,
        shuffle_buffer=cfg.shuffle_buffer if shuffle else 0,
        with_meta=True,
        with_mask=False,
        seed=cfg.seed,
    )


def chosen_windows(keys: list[str], cfg: SeparateConfig) -> set[str] | None:
    """--samples: a seeded subset of the training windows (None: all of them)."""
    if cfg.train_windows is None or cfg.train_windows >= len(keys):
        return None
    rng = np.random.default_rng(cfg.seed)
    return {keys[i] for i in rng.choice(len(keys), cfg.train_windows, replace=False)}


def window_keys(root: str) -> list[str]:
    """Every sample key of a run, from its shard markers (no latent is read)."""
    from ..manifest import OutputRoot

    return sorted(k for marker in OutputRoot(root).markers() for k in marker.keys)


@dataclass
class WaveWindows:
    """The waveform arm's data (and the held-out truth): windows decoded from the stems files with the
    pipeline's own rule (decode_stems: the same windows and the same joint scale as the latents)."""

    keys: list[str]
    w_mix: Tensor  # (N, C, T') folded, downsampled mixture
    w_stems: Tensor  # (N, S, C, T') the same for STEMS
    valid: np.ndarray  # (N,) valid samples (C6)
    truth: np.ndarray | None = None  # (N, S, 2, window) STEMS at 44.1 kHz (held-out split only)
    mixture: np.ndarray | None = None  # (N, 2, window)

    def rows(self, keys: list[str]) -> Tensor:
        index = {k: i for i, k in enumerate(self.keys)}
        return torch.as_tensor([index[k] for k in keys])


def wave_windows(
    cfg: SeparateConfig, split: str, fold: WaveFold, keys: set[str] | None, keep_truth: bool
) -> WaveWindows:
    from ..preprocess.audio import AudioPolicy, decode_stems
    from ..sources.audio import MusdbSource

    source = MusdbSource(cfg.stems, window=cfg.window, sample_rate=RATE, split=split)
    stems = source.grouped_stems()
    mix, rows = stem_rows(list(stems), cfg.stems)
    policy = AudioPolicy(
        sample_rate=RATE, window=cfg.window, hop=cfg.window, channels=fold.channels, stems=stems
    )
    items = [i for i in source.list_items() if keys is None or i.key in keys]
    out_keys, valid, w_mix, w_stems, truth, mixture = [], [], [], [], [], []
    for item in tqdm(items, desc=f"waveforms {split}", disable=not cfg.progress, leave=False):
        decoded = decode_stems(source.read_bytes(item), policy, item.meta)
        x = decoded.array
        out_keys.append(item.key)
        valid.append(int(decoded.meta["valid_length"]))
        w_mix.append(fold.fold(x[mix]).astype(np.float32))
        w_stems.append(fold.fold(x[rows]).astype(np.float32))
        if keep_truth:  # full-rate copies only where they are scored (bounded memory for training)
            mixture.append(x[mix])
            truth.append(x[rows])
    return WaveWindows(
        keys=out_keys,
        w_mix=torch.from_numpy(np.stack(w_mix)),
        w_stems=torch.from_numpy(np.stack(w_stems)),
        valid=np.asarray(valid),
        truth=np.stack(truth) if keep_truth else None,
        mixture=np.stack(mixture) if keep_truth else None,
    )


def cached_wave_windows(
    latent_root: str, cfg: SeparateConfig, split: str, fold: WaveFold, keys: set[str] | None
) -> WaveWindows:
    """wave_windows, kept in <output>/waves-<split>-<hash>.npz: the hash covers the split's manifest and
    every setting that changes them, so a rerun with other training flags skips the audio decoding."""
    import hashlib

    manifest = (Path(latent_root) / split / "manifest.json").read_bytes()
    settings = json.dumps([cfg.stems, cfg.window, sorted(keys or []), fold.up, fold.down, split])
    digest = hashlib.sha256(manifest + settings.encode()).hexdigest()[:16]
    path = Path(cfg.output) / f"waves-{split}-{digest}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as f:
            get = {k: f[k] for k in f.files}
        return WaveWindows(
            keys=[str(k) for k in get["keys"]],
            w_mix=torch.from_numpy(get["w_mix"]),
            w_stems=torch.from_numpy(get["w_stems"]),
            valid=get["valid"],
            truth=get.get("truth"),
            mixture=get.get("mixture"),
        )
    data = wave_windows(cfg, split, fold, keys, keep_truth=split != "train")
    arrays = {
        k: v.numpy() if isinstance(v, Tensor) else np.asarray(v)
        for k, v in vars(data).items()
        if v is not None
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return data


def latents_and_meta(batch) -> tuple[Tensor, list[dict[str, Any]]]:
    """(latents, per-sample metadata) of a loader batch: a tuple (z, y[, mask], meta) or a structure
    with `.latents` / `.meta` (with_meta=True either way)."""
    if hasattr(batch, "latents"):
        return batch.latents, batch.meta
    return batch[0], batch[-1]


def grouped_batches(loader, mix: int, rows: list[int], keep: set[str] | None, batch_size: int):
    """(mixture, stems, keys) batches of whole windows from a loader of grouped stems, in its order
    (shuffled per epoch); with `keep`, only those windows, re-batched to batch_size."""
    pending: list[tuple[Tensor, list[str]]] = []
    size = 0

    def flush():
        z = torch.cat([p[0] for p in pending])
        keys = [k for p in pending for k in p[1]]
        return z[:, mix], z[:, rows], keys

    for batch in loader:
        z, metas = latents_and_meta(batch)
        keys = [m["key"] for m in metas]
        if keep is not None:
            sel = [i for i, k in enumerate(keys) if k in keep]
            z, keys = z[sel], [keys[i] for i in sel]
        while len(keys):
            take = batch_size - size
            pending.append((z[:take], keys[:take]))
            size += len(keys[:take])
            z, keys = z[take:], keys[take:]
            if size == batch_size:
                yield flush()
                pending, size = [], 0
    if size:
        yield flush()


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


class ChannelMix(nn.Module):
    """x + a 1x1 bottleneck MLP over the channels of each step (pre-activation, as ResBlock1d)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm1d(channels),
            nn.GELU(),
            nn.Conv1d(channels, hidden, 1),
            nn.BatchNorm1d(hidden),
            nn.GELU(),
            nn.Conv1d(hidden, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class Separator1d(nn.Module):
    """(B, C, T) mixture -> (B, S * C, T) stems, the same network for latents and folded waveforms:
    a stem, residual blocks with dilations 1, 2, 4, 8 (receptive field 31 steps + 2), 1x1 head.

    stem="conv": one 3-tap conv, channels -> width (20,800 parameters at 108 -> 64). Stems that mix
    the channels of each time step first (latent channels are transform coefficients of the same
    instant), measured in docs/learning-audio.md:
    - "mix": 1x1 conv channels -> width, BatchNorm, GELU, then a width -> width 3-tap conv (19,456);
    - "mixlin": the same without the GELU (a factorised 3-tap conv; 19,456);
    - "mixres": ChannelMix (a residual 1x1 MLP at the input's channels, hidden 32: 7,332), then the
      3-tap conv (28,132 in all)."""

    def __init__(self, channels: int, stems: int, width: int, blocks: int, stem: str = "conv"):
        super().__init__()
        if stem == "conv":
            self.stem: nn.Module = nn.Conv1d(channels, width, 3, padding=1)
        elif stem == "mix":
            self.stem = nn.Sequential(
                nn.Conv1d(channels, width, 1),
                nn.BatchNorm1d(width),
                nn.GELU(),
                nn.Conv1d(width, width, 3, padding=1),
            )
        elif stem == "mixlin":
            self.stem = nn.Sequential(
                nn.Conv1d(channels, width, 1), nn.BatchNorm1d(width), nn.Conv1d(width, width, 3, padding=1)
            )
        elif stem == "mixres":
            self.stem = nn.Sequential(ChannelMix(channels, 32), nn.Conv1d(channels, width, 3, padding=1))
        else:
            raise ValueError(f"stem must be one of {STEM_KINDS}, not {stem!r}")
        self.blocks = nn.Sequential(*[ResBlock1d(width, 2 ** (i % 4)) for i in range(blocks)])
        self.head = nn.Sequential(nn.BatchNorm1d(width), nn.GELU(), nn.Conv1d(width, stems * channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)))


# ---------------------------------------------------------------------------------------------------------
# Arms


@dataclass
class Arm:
    """One arm: its training batches (normalised, in the loader's shuffled order), its held-out
    inputs, its loss and stem, and how its outputs become 44.1 kHz waveforms."""

    name: str
    batches: Callable[[int], Iterator[tuple[Tensor, Tensor]]]  # epoch -> scaled (x, y) batches
    sample: tuple[Tensor, Tensor]  # a few scaled training batches (step size, interleaved speed)
    x_test: Tensor  # scaled
    y_scale: float | Tensor  # a scalar, or (S * C, 1) per output channel: model output * y_scale
    channels: int  # input channels = channels per predicted stem
    to_wave: Any  # (N, S, C, T) unscaled predictions -> (N, S, 2, window)
    loss: Callable[[Tensor, Tensor], Tensor] = nn.functional.mse_loss
    stem: str = "conv"  # Separator1d's stem


def scalar_scales(pairs: list[tuple[Tensor, Tensor]]) -> tuple[float, float]:
    """One std for the inputs and one for the targets (from the first training batches)."""
    x = torch.cat([p[0] for p in pairs])
    y = torch.cat([p[1] for p in pairs])
    return float(x.std()) or 1.0, float(y.std()) or 1.0


@dataclass(frozen=True)
class LatentNorm:
    """How the latent arm's inputs and targets are scaled, and the loss that goes with it.

    channel (from_run; --latent-norm channel): the run manifest's per-channel mean and std of the dequantized
    latents (docs/statistics.md; counted over every stored latent, mixture and stems alike, by the
    pipeline itself: no pass over the data). The std is one scale per channel shared by the mixture
    and every stem, so mixture ~ sum of stems still holds after scaling (linear in z). The mean is
    removed from the mixture (the input) only: removing it from each of the 3 stems would break the
    sum (3 means against 1), and the targets then stay plain latents / std, so the prediction times
    std (y_scale) is what the codec decodes. The loss weights each channel by std^2 / mean(std^2): on
    these scaled targets that is the unscaled latent MSE (what the scalar rule minimised, and close
    to the waveform error the decoder turns it into), so only the conditioning changes, not the goal.

    scalar (the default, the old rule): one std for the inputs and one for the targets, from the
    first training batches, no mean removed, plain MSE."""

    x_mean: Tensor  # (C, 1)
    x_std: Tensor  # (C, 1)
    y_std: Tensor  # (C, 1): per channel of each stem's latents
    weighted: bool  # loss weighted by y_std^2 (per-channel scales) or plain MSE (one scalar)

    @classmethod
    def from_run(cls, root: str) -> LatentNorm:
        from .data import Standardizer

        s = Standardizer.from_run(root)
        mean, std = s.mean.reshape(-1, 1), s.std.reshape(-1, 1)
        return cls(x_mean=mean, x_std=std, y_std=std, weighted=True)

    @classmethod
    def scalar(cls, pairs: list[tuple[Tensor, Tensor]]) -> LatentNorm:
        lx, ly = scalar_scales(pairs)
        channels = pairs[0][0].shape[1]
        one = torch.ones(channels, 1)
        return cls(x_mean=0 * one, x_std=lx * one, y_std=ly * one, weighted=False)

    def inputs(self, z_mix: Tensor) -> Tensor:
        """(B, C, T) mixture latents -> the model's input."""
        return (z_mix - self.x_mean) / self.x_std

    def targets(self, z_stems: Tensor) -> Tensor:
        """(B, S, C, T) stem latents -> (B, S * C, T) targets."""
        return (z_stems / self.y_std).flatten(1, 2)

    def y_scale(self, stems: int) -> Tensor:
        """(S * C, 1): model output * this = stem latents."""
        return self.y_std.repeat(stems, 1)

    def loss(self, stems: int) -> Callable[[Tensor, Tensor], Tensor]:
        if not self.weighted:
            return nn.functional.mse_loss
        from .loop import weighted_mse

        return weighted_mse(self.y_scale(stems).flatten() ** 2)


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
        values = si_sdr_batch(truth[:, s], estimates[:, s], valid)
        scores[f"si_sdr_{stem}"] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    scores["si_sdr"] = float(np.nanmean([scores[f"si_sdr_{s}"] for s in STEMS]))
    return scores


def run_separation(cfg: SeparateConfig) -> dict[str, Any]:
    """Encode (or reuse) the latents, train both arms, write the report; returns report.json's content.

    Training reads the grouped windows through the stock loader (LatentWebDataset: shuffled shards,
    shuffle buffer, one epoch order per (seed, epoch)); both arms take their batches in that order,
    the waveform arm looking its folded waveforms up by the samples' keys."""
    from .. import codec as wc
    from .loop import LearnConfig, interleaved_speed, predict, train_stream
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
    # the full-resolution arm: 44.1 kHz, every sample, folded into 2^J phases per channel (T steps)
    J, channels = codec.config.J, codec.config.channels
    full = WaveFold(channels, channels << J, cfg.window, J)
    roots = {split: str(Path(latent_root) / split) for split in SPLITS}
    train_loader = split_loader(roots["train"], cfg, shuffle=True)
    mix, rows = stem_rows(train_loader.info.stems, roots["train"])
    t0 = time.perf_counter()
    train_keys = window_keys(roots["train"])
    keep = chosen_windows(train_keys, cfg)
    waves = cached_wave_windows(latent_root, cfg, "train", fold, keep) if cfg.waveform_arm else None
    waves_test = cached_wave_windows(latent_root, cfg, "test", fold, None)
    waves_full = cached_wave_windows(latent_root, cfg, "train", full, keep) if cfg.full_arm else None
    test_groups = list(grouped_batches(split_loader(roots["test"], cfg, shuffle=False), mix, rows, None, 256))
    z_mix_test = torch.cat([g[0] for g in test_groups])
    z_stems_test = torch.cat([g[1] for g in test_groups])
    test_keys = [k for g in test_groups for k in g[2]]
    order = waves_test.rows(test_keys)
    test = WaveWindows(
        keys=test_keys,
        w_mix=waves_test.w_mix[order],
        w_stems=waves_test.w_stems[order],
        valid=waves_test.valid[order.numpy()],
        truth=waves_test.truth[order.numpy()],
        mixture=waves_test.mixture[order.numpy()],
    )
    load_s = time.perf_counter() - t0
    n_train = len(keep) if keep is not None else len(train_keys)
    S, C = len(STEMS), codec.config.latent_dim

    def epoch_groups(epoch: int) -> Iterator[tuple[Tensor, Tensor, list[str]]]:
        train_loader.set_epoch(epoch)
        yield from grouped_batches(train_loader, mix, rows, keep, cfg.batch_size)

    first = list(itertools.islice(epoch_groups(0), 4))
    if cfg.latent_norm == "channel":
        norm = LatentNorm.from_run(roots["train"])  # the training run's manifest statistics
    else:
        norm = LatentNorm.scalar([(g[0], g[1]) for g in first])
    if waves is not None:
        wx, wy = scalar_scales(
            [(waves.w_mix[waves.rows(g[2])], waves.w_stems[waves.rows(g[2])]) for g in first]
        )

    def latent_batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        for zm, zs, _ in epoch_groups(epoch):
            yield norm.inputs(zm), norm.targets(zs)

    def wave_batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        for _, _, keys in epoch_groups(epoch):  # the same windows, in the same order, as the latent arm
            idx = waves.rows(keys)
            yield waves.w_mix[idx] / wx, waves.w_stems[idx].flatten(1, 2) / wy

    if waves_full is not None:
        rows_full = [waves_full.rows(g[2]) for g in first]
        fx, fy = scalar_scales([(waves_full.w_mix[r], waves_full.w_stems[r]) for r in rows_full])

    def full_batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        for _, _, keys in epoch_groups(epoch):  # the same windows, in the same order, again
            idx = waves_full.rows(keys)
            yield waves_full.w_mix[idx] / fx, waves_full.w_stems[idx].flatten(1, 2) / fy

    def sample_of(rows_of) -> tuple[Tensor, Tensor]:
        pairs = [rows_of(g) for g in first]
        return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])

    arms = {
        "latent": Arm(
            "latent",
            latent_batches,
            sample_of(lambda g: (norm.inputs(g[0]), norm.targets(g[1]))),
            norm.inputs(z_mix_test),
            norm.y_scale(S),
            C,
            latent_to_wave(codec, cfg.window),
            loss=norm.loss(S),
            stem=cfg.latent_stem,
        ),
    }
    if waves is not None:
        arms["waveform"] = Arm(
            "waveform",
            wave_batches,
            sample_of(
                lambda g: (
                    waves.w_mix[waves.rows(g[2])] / wx,
                    waves.w_stems[waves.rows(g[2])].flatten(1, 2) / wy,
                )
            ),
            test.w_mix / wx,
            wy,
            C,
            fold_to_wave(fold),
        )
    if waves_full is not None:
        arms["full"] = Arm(
            "full",
            full_batches,
            sample_of(
                lambda g: (
                    waves_full.w_mix[waves_full.rows(g[2])] / fx,
                    waves_full.w_stems[waves_full.rows(g[2])].flatten(1, 2) / fy,
                )
            ),
            torch.from_numpy(full.fold(test.mixture).astype(np.float32)) / fx,
            fy,
            full.channels * full.phases,
            fold_to_wave(full),
        )
    tcfg = LearnConfig(
        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, progress=cfg.progress
    )
    steps = -(-n_train // cfg.batch_size)
    results, estimates, trained = {}, {}, {}
    for name, arm in arms.items():
        model = Separator1d(arm.channels, S, cfg.width, cfg.blocks, stem=arm.stem)

        def waves_of(model: nn.Module, arm: Arm = arm) -> np.ndarray:
            y = predict(model, arm.x_test, device, batch_size=cfg.batch_size) * arm.y_scale
            return arm.to_wave(y.reshape(len(y), S, arm.channels, -1))

        epoch = iter(range(1, cfg.epochs + 1))

        def evaluate(model: nn.Module, waves_of=waves_of, epoch=epoch) -> dict[str, float]:
            e = next(epoch)
            if e % max(1, cfg.eval_every) and e != cfg.epochs:
                return {}  # not scored this epoch (the curves skip it)
            return stem_scores(waves_of(model), test.truth, test.valid)

        k = min(cfg.batch_size, len(arm.sample[0]))
        example = (arm.sample[0][:k], arm.sample[1][:k])
        results[name] = train_stream(
            name, model, arm.batches, steps, example, arm.loss, evaluate, tcfg, device
        )
        estimates[name] = waves_of(model)
        trained[name] = (model, *arm.sample)
    for name, speed in interleaved_speed(trained, nn.functional.mse_loss, tcfg, device).items():
        results[name].samples_per_s = speed  # same machine load for both arms (see loop.interleaved_speed)

    references = reference_points(codec, test, z_stems_test, fold)
    extra = {f"{ref} {k}": round(v, 2) for ref, scores in references.items() for k, v in scores.items()}
    extra |= {
        "encode seconds (pipeline, local Ray)": round(encode_s, 1),
        "load + waveform prep seconds": round(load_s, 1),
    }
    sources = Path(cfg.stems) / "SOURCES.json"
    report = Report(
        task="separate",
        title="Music source separation: audio latents vs waveform at the same input budget"
        + (" vs the 44.1 kHz waveform" if "full" in arms else ""),
        metric="si_sdr",
        arms=results,
        data={
            "stems root": cfg.stems,
            "latents": latent_root,
            "train windows": n_train,
            "test windows": len(test.keys),
            "test tracks": len({k.rsplit("_", 1)[0] for k in test.keys}),
            "window": f"{cfg.window} samples ({cfg.window / RATE:.2f} s) at {RATE} Hz, stereo",
            "stems": ", ".join(STEMS),
            "sources": json.loads(sources.read_text()) if sources.is_file() else "not recorded",
        },
        notes=[
            "Data: Bach chorales from music21's corpus rendered per voice with FluidR3_GM (TinySoundFont):"
            " true stems, but synthetic performances (no reverb, no singing voice); vocals = soprano"
            " line, other = alto + tenor, bass = bass.",
            "Training reads grouped windows (mixture + every stem in one sample) through the stock"
            f" LatentWebDataset: shards shuffled, shuffle buffer {cfg.shuffle_buffer}, a new order per"
            " epoch; the waveform arm takes the same windows in the same order (looked up by key).",
            f"Waveform arm: resampled to {fold.rate:.0f} Hz ({fold.up}/{fold.down}) and folded into"
            f" {C} x {fold.steps}; its ceiling (true stems through that resampling) is a reference point.",
            "si_sdr is the mean over stems of each stem's mean SI-SDR over held-out windows (dB,"
            " valid samples only); each arm's own loss is MSE in its own domain.",
            "Latent and waveform arms run the same network on tensors of the same size (108 x 258 vs"
            " 108 x 256), so their training steps cost the same (samples/s: interleaved in-memory steps);"
            " epoch times include reading the latent shards (the waveform arms read them for the order).",
            f"Full arm (the ceiling): the 44.1 kHz waveform itself, every sample, folded into"
            f" {full.channels * full.phases} x {full.steps} ({full.phases} phases per channel:"
            f" {full.phases / fold.phases:.1f}x the values of the waveform arm); the same network but for"
            " its first and last layers' channels.",
        ],
        config=cfg.to_dict() | {"device": str(device)},
        extra=extra,
        figures=[("spectrogram.png", "a held-out window: mixture, true stems and both arms' estimates")],
    )
    out.mkdir(parents=True, exist_ok=True)
    plot_spectrograms(test, estimates, out / "spectrogram.png")
    write_report(report, out)
    return report.to_dict()


def reference_points(
    codec, test: WaveWindows, z_stems: Tensor, fold: WaveFold
) -> dict[str, dict[str, float]]:
    """SI-SDR of the mixture as the estimate and of each arm's ceiling (true stems through its domain)."""
    S = len(STEMS)
    mixture = np.repeat(test.mixture[:, None], S, axis=1)
    codec_ceiling = latent_to_wave(codec, test.truth.shape[-1])(z_stems)
    fold_ceiling = fold_to_wave(fold)(test.w_stems)
    return {
        "mixture as estimate": stem_scores(mixture, test.truth, test.valid),
        "latent ceiling (true stem latents decoded)": stem_scores(codec_ceiling, test.truth, test.valid),
        "waveform ceiling (true stems resampled)": stem_scores(fold_ceiling, test.truth, test.valid),
    }


def plot_spectrograms(test: WaveWindows, estimates: dict[str, np.ndarray], path: Path) -> None:
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
            ax.set_title(f"{stem}: {title}" if c else f"{title} ({test.keys[i]})", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
