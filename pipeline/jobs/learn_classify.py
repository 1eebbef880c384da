#!/usr/bin/env python
"""Image classification on WaLLoC latents vs pixels at the same input budget, with a report.

RGB 256x256 -> latents 12x32x32 (12,288 values) vs the image downsampled to 3x64x64 (12,288
values); both feed the same small ResNet trunk, only the stem differs. Trains both arms, prints
accuracy, training samples/s and peak memory side by side, and writes report.md, report.json,
curves.png and samples.png into --output.

Data: --images (ImageNet layout: train/<class>/*, val/<class>/*; encoded by the pipeline into
<output>/latents first, on a local Ray) or --latents (an existing WebDataset run whose source
images are still on disk, for the pixel arm). The default data/imagenet-mini (scripts/fetch_data.py)
is crops of real photographs labelled by hand-made scene group; val crops share photographs with
train crops (the report says how many), so read its accuracy as scene/photo recognition.

Examples:
    python jobs/learn_classify.py                                  # CPU, a few minutes
    python jobs/learn_classify.py --device cuda --epochs 40 --width 64 --blocks 2
"""

from __future__ import annotations

import argparse
import sys

from ..cli import JobArgumentParser
from ..learning.cli import add_learning_flags, net_and_train, validate_learning_args


def build_parser() -> argparse.ArgumentParser:
    p = JobArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--images", default="data/imagenet-mini", help="image folder to encode (default: %(default)s)"
    )
    p.add_argument("--latents", help="train from this existing pipeline run (WebDataset) instead of --images")
    add_learning_flags(p, output="out/learn-classify", epochs=8, codec=None)  # by the images' channels
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_checked(argv, lambda a: validate_learning_args(a, "--images"))
    from ..learning.classify import ClassifyConfig, run

    net, train = net_and_train(args)
    run(
        ClassifyConfig(
            output=args.output,
            images=args.images,
            latents=args.latents,
            codec=args.codec,
            samples=args.samples,
            device=args.device,
            net=net,
            train=train,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
