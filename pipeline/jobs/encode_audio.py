#!/usr/bin/env python
"""Encode an audio corpus into WaLLoC latent shards (WebDataset or Zarr) on Ray, window by window.

Inputs: a folder of audio files (wav/flac/ogg/aiff/mp3, any rate, mono/stereo/multichannel) or a
MUSDB18-HQ tree (<root>/<split>/<track>/{mixture,drums,bass,other,vocals}.wav; the mixture and each
stem become separate samples). Every file is resampled to --sample-rate and cut into --window
sample windows every --hop samples; each window is normalised (mean removed per channel, peak at
0.5; the scale and mean are in its .json so the waveform can be restored) and the last one is
zero-padded (its valid length is recorded).

With no arguments it encodes the bundled music clips with the bundled stereo codec on a local Ray
into ./out/audio-wds. On a cluster:
    ray job submit --working-dir . -- python jobs/encode_audio.py --input s3://bucket/musdb18hq \\
        --output s3://bucket/latents/musdb --window 131072 --shard-size 512
Installed (pip install walloc-pipeline): the same flags as `walloc-encode-audio`.
"""

from __future__ import annotations

import argparse
import sys

from ..cli import (
    JobArgumentParser,
    add_common_flags,
    encode_config,
    positive_int,
    run_encode_job,
    validate_encode_args,
)
from ..config import CHANNEL_POLICIES, DEFAULT_AUDIO_CODEC, DEFAULT_AUDIO_INPUT, AudioSettings

DEFAULTS = AudioSettings()


def build_parser() -> argparse.ArgumentParser:
    parser = JobArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(
        parser,
        default_input=DEFAULT_AUDIO_INPUT,
        default_output="out/audio-wds",
        default_codec=DEFAULT_AUDIO_CODEC,
    )
    audio = parser.add_argument_group("audio")
    audio.add_argument(
        "--window",
        type=positive_int,
        default=DEFAULTS.window,
        help="samples per window at --sample-rate, the codec's input length "
        f"(default {DEFAULTS.window} = {DEFAULTS.window / DEFAULTS.sample_rate:.2f} s at "
        f"{DEFAULTS.sample_rate} Hz); a multiple of the codec's 2^J avoids padding",
    )
    audio.add_argument(
        "--hop",
        type=positive_int,
        default=DEFAULTS.hop,
        help="samples between window starts (default: --window, no overlap; smaller overlaps)",
    )
    audio.add_argument(
        "--sample-rate",
        type=positive_int,
        default=DEFAULTS.sample_rate,
        help="the codec's sample rate: every input is resampled to it (polyphase, Kaiser-windowed "
        f"sinc) before windowing (default {DEFAULTS.sample_rate})",
    )
    audio.add_argument(
        "--channel-policy",
        choices=CHANNEL_POLICIES,
        default=DEFAULTS.channel_policy,
        help="inputs with more channels than the codec: refuse (an error row per window, the default) "
        "or downmix (ITU-R BS.775 matrix to stereo, LFE dropped; 3 to 8 channels). Mono inputs "
        "are always duplicated to the codec's channels",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_checked(argv, lambda a: validate_encode_args(a, "audio"))
    audio = {
        "window": args.window,
        "hop": args.hop,
        "sample_rate": args.sample_rate,
        "channel_policy": args.channel_policy,
    }
    cfg = encode_config(parser, args, audio=audio)
    return run_encode_job(cfg, dry_run=args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
