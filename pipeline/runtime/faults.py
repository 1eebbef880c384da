"""Tests only: make a worker process die where a real fault would (an OOM kill, a node loss)."""

from __future__ import annotations

import os

KILL_SWITCH_ENV = "WALLOC_TEST_KILL_SWITCH"


def kill_switch(stage: str, shard: int) -> None:
    """Die here, as an OOM kill would (no cleanup, no exception), when the test asks for it.

    $WALLOC_TEST_KILL_SWITCH names a file of lines `<stage> <shard> once|always`; stage `encode`
    dies in the middle of encoding the shard, `write` after the shard is in place but before its
    marker. "once": only the first process to get there dies (it creates `<file>.<stage>-<shard>`
    first); the retry runs normally. "always": every attempt at that shard dies. Each death appends
    `<stage> <shard> <pid>` to `<file>.log`. Without the variable (every real run): one dict lookup."""
    path = os.environ.get(KILL_SWITCH_ENV)
    if not path:
        return
    try:
        with open(path) as f:
            lines = [line.split() for line in f if line.strip()]
    except FileNotFoundError:
        return
    for want_stage, want_shard, how in lines:
        if (want_stage, int(want_shard)) != (stage, shard):
            continue
        if how == "once":
            try:
                os.close(os.open(f"{path}.{stage}-{shard}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:  # fired already: this is the retry
                return
        with open(f"{path}.log", "a") as f:
            f.write(f"{stage} {shard} {os.getpid()}\n")
        os._exit(1)
