"""Encode runs on a Ray of their own, in a child process of a test: `python isolated_run.py SPEC RESULT`.

For tests that must control the environment of the Ray workers (the session's Ray started before
the test, and workers inherit the environment of the raylet that forks them): the test sets e.g.
WALLOC_TEST_KILL_SWITCH in this process's environment, this process starts a private local Ray
(its own temp dir, so no other `ray.init` joins it), and every worker it forks sees the variable.

SPEC (JSON): {"runs": [{"config": {EncodeConfig.to_dict() layout}, "kill_switch": "<lines>" | null}]}
    before each run the kill-switch file ($WALLOC_TEST_KILL_SWITCH) is written with those lines, or
    removed when null (see pipeline.runtime.faults.kill_switch);
RESULT (JSON): one RunSummary (as a dict) per run, in order.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path


def main(spec_path: str, result_path: str) -> int:
    import ray

    from pipeline.config import EncodeConfig
    from pipeline.runtime import run_encode
    from pipeline.runtime.faults import KILL_SWITCH_ENV

    spec = json.loads(Path(spec_path).read_text())
    switch = Path(os.environ[KILL_SWITCH_ENV]) if KILL_SWITCH_ENV in os.environ else None
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths are limited
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level="WARNING",
        configure_logging=False,
        _temp_dir=temp_dir,
    )
    results = []
    try:
        for run in spec["runs"]:
            if switch is not None:
                if run.get("kill_switch"):
                    switch.write_text(run["kill_switch"] + "\n")
                else:
                    switch.unlink(missing_ok=True)
            summary = run_encode(EncodeConfig.from_dict(run["config"]))
            print(summary.format(), flush=True)
            results.append(dataclasses.asdict(summary))
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
    Path(result_path).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
