"""The encode runtime: typed stages (no Ray), the Ray executor (the only `import ray`), the driver."""

from .driver import run_encode
from .plan import OutputConflictError
from .summary import RunSummary

__all__ = ["OutputConflictError", "RunSummary", "run_encode"]
