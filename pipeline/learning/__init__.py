"""Compressed-domain learning jobs: the same network family trained on codec latents and on pixels.

One module per task (classify, colorize, ocr; separate: audio) and small shared parts: data
(encode + read latent shards, the pixel pipeline), models (stems + one trunk), loop (LearnConfig:
training, throughput, peak memory), report (report.md / report.json / plots); the metrics are
pipeline.metrics, shared with codec training (pipeline.training, CodecTrainConfig). The jobs in
jobs/learn_*.py are thin wrappers.

Input budget: RGB 256x256 -> latents 12x32x32 = 12,288 values = 3x64x64 pixels, so the pixel
baseline sees the image downsampled to 64x64 and both arms feed the same number of values to the
same trunk; only the stem differs.
"""
