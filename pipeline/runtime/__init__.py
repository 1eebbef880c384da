"""The only Ray-facing code: the encode run (Ray Data stages) and output planning."""

from .encode import RunSummary, run_encode
from .plan import OutputConflictError

__all__ = ["OutputConflictError", "RunSummary", "run_encode"]
