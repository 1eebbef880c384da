"""One writer per output root: a lease file (`_lease.json`) that a run holds while it writes.

Why: two drivers on the same output (a scheduled append overlapping a manual resume, a RayCronJob
tick while the last run is still going) would plan the same shard numbers for different inputs and
interleave markers. The lease makes the second run fail fast and say who holds the output.

    _lease.json  {"owner": "host:pid:uuid", "acquired": ISO-8601 UTC, "expires": ISO-8601 UTC, "ttl_s"}

- acquire: free or expired -> ours; held by a live owner -> LeaseHeldError (who, until when).
- renew:   a background thread pushes `expires` forward every ttl/3; if the file names another owner
           (our lease expired and was taken over) the lease is marked lost and `check()` raises, so
           the run does not commit its manifest over another writer's work.
- release: at the end of the run (also on errors), only if the file still names us. A local root
           the lease created is removed again when the run left nothing in it (an input with
           nothing to encode, a refused listing): a failed start leaves no trace.

Guarantees. Local filesystems: creation is atomic (O_CREAT|O_EXCL) and every read-modify-write
(takeover, renew, release) runs under an flock on `_lease.lock`, so exactly one acquirer wins.
Object stores (s3://, gs://, ... through fsspec) have neither: acquire writes the lease, waits
`settle_s`, reads it back and keeps it only if it still names us. Two drivers can both win only if
one stalls between its read and its write for longer than `settle_s`; the loser then finds another
owner at its first renewal (ttl/3 later) and refuses to commit. Expiry is judged on the acquirer's
clock: keep hosts NTP-synchronised and the TTL far above any expected clock skew.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from ..manifest import LEASE, LEASE_LOCK, OutputRoot

DEFAULT_TTL_S = 120.0  # a crashed driver blocks the output for at most this long
SETTLE_S = 2.0  # object stores: wait between writing the lease and reading it back


class LeaseHeldError(RuntimeError):
    """Another live run holds the output."""


class LeaseLostError(RuntimeError):
    """Our lease expired and another run took the output over."""


def _iso(t: float) -> str:
    stamp = datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _epoch(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def new_owner() -> str:
    """host:pid:uuid: the host and pid say where to look; the uuid tells two runs of one pid apart."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def owner_is_dead(owner: str) -> bool:
    """True when the owner ran on this host and its process is gone (a crashed driver here).

    Then its lease need not be waited out: re-running the same command right after a crash resumes
    at once. Owners on other hosts can only expire.
    """
    host, _, rest = owner.partition(":")
    pid_text = rest.split(":", 1)[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by another user
        return False
    return False


@dataclass(frozen=True)
class LeaseInfo:
    owner: str
    acquired: float  # epoch seconds
    expires: float
    ttl_s: float

    def live(self, now: float) -> bool:
        return now < self.expires

    def to_json(self) -> bytes:
        d = {
            "owner": self.owner,
            "acquired": _iso(self.acquired),
            "expires": _iso(self.expires),
            "ttl_s": self.ttl_s,
        }
        return (json.dumps(d, indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> LeaseInfo:
        d = json.loads(data)
        return cls(d["owner"], _epoch(d["acquired"]), _epoch(d["expires"]), float(d.get("ttl_s", 0)))

    def describe(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        state = f"expires {_iso(self.expires)}" if self.live(now) else f"expired {_iso(self.expires)}"
        return f"held by {self.owner} since {_iso(self.acquired)}, {state}"


def read_lease(root: OutputRoot) -> LeaseInfo | None:
    """The lease currently in the output root, if any (an unreadable file counts as none)."""
    try:
        data = root.fs.cat_file(f"{root.path}/{LEASE}")
    except FileNotFoundError:
        return None
    try:
        return LeaseInfo.from_json(data)
    except (ValueError, KeyError, TypeError):
        return None


class OutputLease:
    """The exclusive right to write one output root; a context manager that also keeps it renewed."""

    def __init__(
        self,
        root: OutputRoot,
        ttl_s: float = DEFAULT_TTL_S,
        *,
        owner: str | None = None,
        settle_s: float = SETTLE_S,
        clock: Callable[[], float] = time.time,
    ):
        if ttl_s <= 0:
            raise ValueError("lease ttl must be positive")
        self.root = root
        self.ttl_s = ttl_s
        self.owner = owner or new_owner()
        self.settle_s = settle_s
        self.clock = clock
        self.path = f"{root.path}/{LEASE}"
        self.local = isinstance(root.fs, LocalFileSystem)
        self.lost: str | None = None  # set by renew() when another owner holds the file
        # local: the folders this lease created (the root and any missing parents, topmost first);
        # release() removes them again when the run left nothing in them but the lock file
        self.created: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- primitives -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise read-modify-write of the lease between processes (local filesystems only)."""
        if not self.local:
            yield
            return
        import fcntl

        os.makedirs(self.root.path, exist_ok=True)
        fd = os.open(f"{self.root.path}/{LEASE_LOCK}", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _info(self, acquired: float | None = None) -> LeaseInfo:
        now = self.clock()
        return LeaseInfo(self.owner, acquired if acquired is not None else now, now + self.ttl_s, self.ttl_s)

    def _create_exclusive(self, info: LeaseInfo) -> bool:
        """Local: create the file only if absent (O_EXCL). False if it exists."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(info.to_json())
            f.flush()
            os.fsync(f.fileno())
        return True

    def _replace(self, info: LeaseInfo) -> None:
        if self.local:
            tmp = f"{self.path}.tmp-{uuid.uuid4().hex[:8]}"
            with open(tmp, "wb") as f:
                f.write(info.to_json())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        else:
            self.root.fs.pipe_file(self.path, info.to_json())

    def _remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.root.fs.rm_file(self.path)

    # --- the protocol ---------------------------------------------------------------------
    def acquire(self) -> LeaseInfo:
        """Take the lease, or raise LeaseHeldError naming the live holder."""
        if self.local:
            self.created = _missing_folders(self.root.path)
        with self._locked():
            current = read_lease(self.root)
            now = self.clock()
            if (
                current is not None
                and current.live(now)
                and current.owner != self.owner
                and not owner_is_dead(current.owner)
            ):
                raise self._held(current)
            info = self._info()
            if self.local:
                if current is not None or os.path.exists(self.path):
                    self._remove()  # expired (or unreadable): taken over, under the lock
                if not self._create_exclusive(info):  # only a lock-ignoring writer gets here
                    raise self._held(read_lease(self.root))
                return info
            self.root.fs.makedirs(self.root.path, exist_ok=True)
            self._replace(info)
        time.sleep(self.settle_s)  # object stores: let a concurrent writer's put land, then compare
        back = read_lease(self.root)
        if back is None or back.owner != self.owner:
            raise self._held(back)
        return info

    def renew(self) -> None:
        """Push the expiry forward; marks the lease lost (and raises) if another owner holds it."""
        with self._locked():
            current = read_lease(self.root)
            if current is None or current.owner != self.owner:
                self.lost = (
                    f"lease on {self.root.url} lost: "
                    + (current.describe(self.clock()) if current else "the lease file was removed")
                    + f" (we are {self.owner})"
                )
                raise LeaseLostError(self.lost)
            self._replace(self._info(acquired=current.acquired))

    def release(self) -> None:
        """Remove the lease if it is still ours (never another run's)."""
        self._stop_renewing()
        with self._locked():
            current = read_lease(self.root)
            if current is not None and current.owner == self.owner:
                self._remove()
            root = self.root.path
            left_nothing = bool(self.created) and os.path.isdir(root) and os.listdir(root) == [LEASE_LOCK]
            if left_nothing:  # removed under the lock; the folders after it, and only while empty
                os.unlink(f"{root}/{LEASE_LOCK}")
        if left_nothing:
            _remove_empty(self.created)

    def check(self) -> None:
        """Raise LeaseLostError if a renewal found that another run took the output over."""
        if self.lost:
            raise LeaseLostError(self.lost)

    def _held(self, current: LeaseInfo | None) -> LeaseHeldError:
        who = current.describe(self.clock()) if current else "taken by a concurrent run"
        return LeaseHeldError(
            f"{self.root.url} is being written by another run ({who}). Wait for it to finish; if its "
            f"driver died, the lease expires by itself (ttl {self.ttl_s:.0f} s) and the next run takes "
            f"over; or remove {self.root.url}/{LEASE} once you are sure no run is writing."
        )

    # --- background renewal ---------------------------------------------------------------
    def _renew_loop(self) -> None:
        interval = self.ttl_s / 3
        while not self._stop.wait(interval):
            try:
                self.renew()
            except LeaseLostError:
                return
            except Exception:  # noqa: BLE001 - a failed renewal is retried at the next tick
                continue

    def start_renewing(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, name="output-lease", daemon=True)
        self._thread.start()

    def _stop_renewing(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> OutputLease:
        self.acquire()
        self.start_renewing()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _missing_folders(path: str) -> list[str]:
    """The folders of `path` (itself, then its parents) that do not exist yet, topmost first."""
    missing = []
    path = os.path.abspath(path)
    while not os.path.exists(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing[::-1]


def _remove_empty(folders: list[str]) -> None:
    """Remove these folders, deepest first, while they are empty (a concurrent run's files stay)."""
    for folder in reversed(folders):
        try:
            os.rmdir(folder)
        except OSError:  # not empty (another run is starting there) or already gone
            return


def holder_message(root: OutputRoot, now: float | None = None) -> str | None:
    """A line for the dry run: the live lease on the output, if any."""
    info = read_lease(root)
    if info is None:
        return None
    return info.describe(now)
