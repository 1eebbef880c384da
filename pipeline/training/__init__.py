"""Training WaLLoC codecs: data (crops/windows, split by file), the KLT baseline, the training loop.

data.py   random image crops / audio windows from folders, held-out split by file
klt.py    closed-form linear codec (PCA of wavelet packet coefficients), encoder initialisation
loop.py   the reference recipe, checkpoint/resume, single process or Ray Train data parallel
job.py    one job end to end (jobs/train_codec.py is its command line)
rd_report.py  the rate-distortion report (jobs/evaluate_codec.py is its command line)
"""

from .klt import KLT, fit_klt, init_encoder_from_klt, klt_codec
from .loop import TrainConfig, TrainResult, train, train_ray, validate

__all__ = [
    "KLT",
    "TrainConfig",
    "TrainResult",
    "fit_klt",
    "init_encoder_from_klt",
    "klt_codec",
    "train",
    "train_ray",
    "validate",
]
