"""The output lease: one writer per output root, expiry takeover, release on errors."""

from __future__ import annotations

import json
import multiprocessing as mp
import threading
import time
from pathlib import Path

import pytest

from pipeline.config import EncodeConfig
from pipeline.manifest import LEASE, RUN_STATE, OutputRoot
from pipeline.runtime.lease import (
    LeaseHeldError,
    LeaseLostError,
    OutputLease,
    read_lease,
)
from pipeline.sinks import SinkSpec


def _contend(n: int, make_lease, barrier_timeout: float = 10.0) -> list[str | None]:
    """n threads acquire at once; each returns its owner on success, None on LeaseHeldError."""
    barrier = threading.Barrier(n)
    results: list[str | None] = [None] * n

    def one(i: int) -> None:
        lease = make_lease(f"contender-{i}")
        barrier.wait(barrier_timeout)
        try:
            lease.acquire()
            results[i] = lease.owner
        except LeaseHeldError:
            results[i] = None

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrent_acquirers_local_one_wins(tmp_path: Path) -> None:
    root = OutputRoot(str(tmp_path / "out"))
    results = _contend(8, lambda owner: OutputLease(root, ttl_s=60, owner=owner))
    winners = [r for r in results if r]
    assert len(winners) == 1
    assert read_lease(root).owner == winners[0]


def _acquire_in_process(path: str, owner: str, barrier, queue) -> None:
    lease = OutputLease(OutputRoot(path), ttl_s=60, owner=owner)
    barrier.wait(20)
    try:
        lease.acquire()
        queue.put(owner)
    except LeaseHeldError:
        queue.put(None)


def test_concurrent_acquirers_in_processes_one_wins(tmp_path: Path) -> None:
    """The real case: two drivers (processes) on one output."""
    ctx = mp.get_context("fork")
    barrier, queue = ctx.Barrier(4), ctx.Queue()
    out = str(tmp_path / "out")
    procs = [ctx.Process(target=_acquire_in_process, args=(out, f"p{i}", barrier, queue)) for i in range(4)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(10)
    winners = [r for r in results if r]
    assert len(winners) == 1
    assert read_lease(OutputRoot(out)).owner == winners[0]


def test_concurrent_acquirers_object_store_one_wins() -> None:
    """fsspec stores (memory:// stands in for s3://): write, settle, read back, compare."""
    root = OutputRoot("memory://lease-test/out")
    try:
        results = _contend(4, lambda owner: OutputLease(root, ttl_s=60, owner=owner, settle_s=0.3))
        winners = [r for r in results if r]
        assert len(winners) == 1
        assert read_lease(root).owner == winners[0]
    finally:
        root.fs.rm("/lease-test", recursive=True)


def test_live_lease_refused_with_holder_and_expiry(tmp_path: Path) -> None:
    root = OutputRoot(str(tmp_path))
    first = OutputLease(root, ttl_s=600, owner="hostA:123:abc")
    first.acquire()
    with pytest.raises(LeaseHeldError) as err:
        OutputLease(root, ttl_s=600, owner="hostB:456:def").acquire()
    message = str(err.value)
    assert "hostA:123:abc" in message
    assert json.loads((tmp_path / LEASE).read_text())["expires"] in message
    assert read_lease(root).owner == "hostA:123:abc"  # untouched by the refused run


def test_expired_lease_is_taken_over_and_old_owner_loses(tmp_path: Path) -> None:
    root = OutputRoot(str(tmp_path))
    now = [1000.0]
    crashed = OutputLease(root, ttl_s=30, owner="crashed", clock=lambda: now[0])
    crashed.acquire()
    now[0] += 29
    with pytest.raises(LeaseHeldError):
        OutputLease(root, ttl_s=30, owner="early", clock=lambda: now[0]).acquire()
    now[0] += 2  # past the expiry
    successor = OutputLease(root, ttl_s=30, owner="successor", clock=lambda: now[0])
    successor.acquire()
    assert read_lease(root).owner == "successor"
    with pytest.raises(LeaseLostError, match="successor"):
        crashed.renew()
    with pytest.raises(LeaseLostError):
        crashed.check()
    crashed.release()  # must not remove the successor's lease
    assert read_lease(root).owner == "successor"


def test_renewal_thread_keeps_the_lease_alive(tmp_path: Path) -> None:
    root = OutputRoot(str(tmp_path))
    with OutputLease(root, ttl_s=0.6, owner="runner"):
        first = read_lease(root).expires
        time.sleep(0.9)  # renewals every 0.2 s
        assert read_lease(root).expires > first
        assert read_lease(root).live(time.time())
        with pytest.raises(LeaseHeldError):
            OutputLease(root, ttl_s=0.6, owner="other").acquire()
    assert read_lease(root) is None


def test_released_on_exception(tmp_path: Path) -> None:
    root = OutputRoot(str(tmp_path))
    with pytest.raises(ZeroDivisionError), OutputLease(root, ttl_s=60):
        assert read_lease(root) is not None
        _ = 1 / 0
    assert read_lease(root) is None
    OutputLease(root, ttl_s=60).acquire()  # the output is free again


def test_overwrite_clear_keeps_the_lease_and_is_empty_ignores_it(tmp_path: Path) -> None:
    root = OutputRoot(str(tmp_path / "out"))
    lease = OutputLease(root, ttl_s=60)
    lease.acquire()
    assert root.is_empty()  # only the lease: still an empty output for planning
    root.write_json(RUN_STATE, {"x": 1})
    assert not root.is_empty()
    root.clear()
    assert root.is_empty()
    assert read_lease(root).owner == lease.owner


def test_run_encode_fails_fast_on_a_held_output(tmp_path: Path) -> None:
    """The second run is refused before listing inputs (the input does not even exist here)."""
    from pipeline.runtime import run_encode

    out = tmp_path / "out"
    holder = OutputLease(OutputRoot(str(out)), ttl_s=600, owner="other-driver:1:x")
    holder.acquire()
    cfg = EncodeConfig(input=str(tmp_path / "missing"), sink=SinkSpec(output=str(out)), progress=False)
    with pytest.raises(LeaseHeldError, match="other-driver:1:x"):
        run_encode(cfg)


def test_run_encode_releases_the_lease_when_it_fails(tmp_path: Path) -> None:
    from pipeline.runtime import run_encode

    out = tmp_path / "out"
    cfg = EncodeConfig(input=str(tmp_path / "missing"), sink=SinkSpec(output=str(out)), progress=False)
    with pytest.raises(Exception) as err:  # noqa: B017 - whatever the source raises for a missing input
        run_encode(cfg)
    assert not isinstance(err.value, LeaseHeldError)
    assert read_lease(OutputRoot(str(out))) is None


def test_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    """A crashed driver's lease does not block re-running the command for its whole TTL."""
    import os
    import socket
    import subprocess
    import sys

    from pipeline.runtime.lease import owner_is_dead

    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(child.stdout)
    root = OutputRoot(str(tmp_path / "out"))
    root.fs.makedirs(root.path, exist_ok=True)
    crashed = OutputLease(root, owner=f"{socket.gethostname()}:{dead_pid}:deadbeef0000", ttl_s=3600)
    crashed.acquire()  # never released: the process that held it is gone
    assert owner_is_dead(crashed.owner)
    assert not owner_is_dead(f"{socket.gethostname()}:{os.getpid()}:alive0000000")
    assert not owner_is_dead(f"some-other-host:{dead_pid}:remote000000")  # can only expire
    taker = OutputLease(root, ttl_s=3600)
    assert taker.acquire().owner == taker.owner
    taker.release()


def test_a_root_the_lease_created_is_removed_when_the_run_wrote_nothing(tmp_path: Path) -> None:
    """A failed start (nothing to encode, a refused listing) leaves no folder behind: the root and
    the parents the lease made are removed again; roots that held something, or existed, stay."""
    new = tmp_path / "a" / "b" / "out"
    with OutputLease(OutputRoot(str(new))):
        assert (new / "_lease.json").exists()
    assert not (tmp_path / "a").exists()

    kept = tmp_path / "c" / "out"
    with OutputLease(OutputRoot(str(kept))):
        (kept / "shard-000000.tar").write_bytes(b"x")  # the run wrote something: its output stays
    assert sorted(p.name for p in kept.iterdir()) == ["_lease.lock", "shard-000000.tar"]

    sibling = tmp_path / "d" / "out"
    with OutputLease(OutputRoot(str(sibling))):
        (tmp_path / "d" / "other").mkdir()  # something else appeared beside it: only ours goes
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["other"]

    existing = tmp_path / "existing"
    existing.mkdir()
    with OutputLease(OutputRoot(str(existing))):
        pass
    assert existing.is_dir()  # not created by the lease: left (with its lock file)
