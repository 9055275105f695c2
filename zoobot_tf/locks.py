"""A lock file that keeps two jobs from writing into the same folder.

``RunLock(folder)`` creates ``folder/.zoobot-tf.lock`` atomically (``O_EXCL``, so it works on shared file
systems where ``flock`` may not) holding the owner's pid, host, start time and command. A second job that
finds it is refused with a message naming the owner, unless the lock is stale: its owner was on this host
and that process is gone, or (another host) the owner has not refreshed it (:meth:`RunLock.refresh`, every
epoch) for ``stale_after`` seconds. The lock is removed when the job ends, also on an exception.
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import sys
import time
from pathlib import Path

LOCK_NAME = ".zoobot-tf.lock"


class FolderInUseError(RuntimeError):
    """Another live job is writing into the folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """See the module docstring. Use as a context manager or with acquire()/release()."""

    def __init__(self, folder: str | Path, what: str = "a zoobot-tf job", stale_after: float = 6 * 3600):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what = what
        self.stale_after = stale_after
        self.held = False

    def _owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, OSError):
            return {}  # being written right now: a live owner

    def _stale(self, owner: dict) -> bool:
        if not owner:
            try:
                return time.time() - self.path.stat().st_mtime > 60  # an empty lock nobody finished writing
            except FileNotFoundError:
                return True
        if owner.get("host") == socket.gethostname():
            return not _alive(int(owner.get("pid", -1)))
        try:
            return time.time() - self.path.stat().st_mtime > self.stale_after
        except FileNotFoundError:
            return True

    def acquire(self) -> "RunLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "command": " ".join(sys.argv)}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is None:
                    continue  # released meanwhile
                if self._stale(owner):
                    self.path.unlink(missing_ok=True)
                    continue
                raise FolderInUseError(
                    f"{self.folder} is in use by {self.what}: pid {owner.get('pid', '?')} on "
                    f"{owner.get('host', '?')} since {owner.get('started', '?')} ({owner.get('command', '')}). "
                    f"Wait for it to finish or stop it, or use another folder. (A lock left by a process that "
                    f"died is detected and taken over: {self.path}.)") from None
            with os.fdopen(fd, "w") as f:
                json.dump(info, f)
            self.held = True
            return self
        raise FolderInUseError(f"Could not lock {self.folder} ({self.path} keeps reappearing).")

    def refresh(self) -> None:
        """Mark the lock as alive (for owners on other hosts, who cannot check our pid)."""
        if self.held:
            try:
                os.utime(self.path)
            except FileNotFoundError:
                pass

    def release(self) -> None:
        if self.held:
            owner = self._owner()
            if owner and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
