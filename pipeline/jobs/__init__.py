"""The jobs' command lines: each module's `build_parser()` + `main(argv)`, run as

    python jobs/<job>.py ...        a checkout, or `ray job submit --working-dir .` (thin wrappers)
    walloc-<command> ...            an installed package ([project.scripts] in pyproject.toml)

Parsing checks every flag (pipeline/cli.py): a user's mistake is one line on stderr and exit code 2,
before Ray starts or anything is written. Heavy imports (torch, Ray) come after the checks.
"""

# module -> console script (pyproject.toml's [project.scripts] lists the same; a test compares them)
COMMANDS = {
    "encode_imagenet": "walloc-encode-images",
    "encode_audio": "walloc-encode-audio",
    "encode_raster": "walloc-encode-raster",
    "train_codec": "walloc-train-codec",
    "evaluate_codec": "walloc-evaluate-codec",
    "learn_classify": "walloc-learn-classify",
    "learn_colorize": "walloc-learn-colorize",
    "learn_ocr": "walloc-learn-ocr",
    "learn_documents": "walloc-learn-documents",
    "learn_separate": "walloc-learn-separate",
}
