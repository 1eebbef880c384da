"""Training WaLLoC codecs: data (crops/windows, split by file), the KLT baseline, the training loop.

codec_data.py   random image crops / audio windows from folders, held-out split by file
klt.py          closed-form linear codec (PCA of wavelet packet coefficients), encoder initialisation
codec_loop.py   the reference recipe (CodecTrainConfig), checkpoint/resume, single process or Ray Train
evaluate.py     rate-distortion points of codecs and baselines on held-out files
job.py          one job end to end (jobs/train_codec.py is its command line)
rd_report.py    the rate-distortion report (jobs/evaluate_codec.py is its command line)

The metrics (PSNR, SSIM, MS-SSIM, SNR, SI-SDR) are pipeline.metrics, shared with pipeline.learning
(the downstream jobs, whose training loop is pipeline.learning.loop with its LearnConfig).
"""

from .codec_loop import CodecTrainConfig, CodecTrainResult, train, train_ray, validate
from .klt import KLT, fit_klt, init_encoder_from_klt, klt_codec

__all__ = [
    "KLT",
    "CodecTrainConfig",
    "CodecTrainResult",
    "fit_klt",
    "init_encoder_from_klt",
    "klt_codec",
    "train",
    "train_ray",
    "validate",
]
