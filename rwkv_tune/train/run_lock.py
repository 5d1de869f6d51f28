"""One run directory, one writer: `<output.dir>/.lock`, held with `flock` by the live trainer (rank 0).

The kernel drops a `flock` when its holder dies, even by SIGKILL, so a crashed run's successor takes
over without asking (on a filesystem without flock, a holder whose pid is gone on this host is stale). The file keeps who holds it (pid, host, start time) for the refusal message; it
is never deleted (deleting a lock file lets two processes lock two different files). Torch-free.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from rwkv_tune.errors import UserError

LOCK_NAME = ".lock"


class RunLock:
    """An exclusive, non-blocking lock on one run directory."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock or raise UserError naming the process that holds it."""
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._busy_error() from None
        except OSError as exc:  # a filesystem without flock (some network mounts): trust a live pid instead
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                os.close(fd)
                raise
            if self._holder_alive():
                os.close(fd)
                raise self._busy_error() from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": round(time.time(), 3)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(fd)
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        except OSError:
            pass  # no flock on this filesystem: the emptied record is the release
        finally:
            os.close(self._fd)
            self._fd = None

    def holder(self) -> dict[str, Any]:
        """Who wrote the lock file last ({} when empty or unreadable)."""
        try:
            record = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def _holder_alive(self) -> bool:
        """Whether the recorded holder is a live process on this host (another host's is taken as live)."""
        who = self.holder()
        if not who.get("pid"):
            return False
        if who.get("host") != socket.gethostname():
            return True
        try:
            os.kill(int(who["pid"]), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, ValueError):
            return True
        return int(who["pid"]) != os.getpid()

    def _busy_error(self) -> UserError:
        who = self.holder()
        pid, host = who.get("pid", "?"), who.get("host", "?")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(who["started"])) if "started" in who else "?"
        run_dir = self.path.parent
        return UserError(f"the run directory {run_dir} is in use by another trainer (pid {pid} on host {host}, "
                         f"started {since}); a second writer would mix two runs in one metrics.jsonl",
                         f"Wait for it to finish (rwkv-tune watch {run_dir}), stop it (kill {pid} on {host}), "
                         "or train into another output.dir (--set output.dir=...); if that process is gone, "
                         f"delete {self.path}.")

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
