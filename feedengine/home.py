"""The data directory, ``FEEDENGINE_HOME``: one process at a time (SPEC section 5).

It holds the spill file, the checkpoints, the instruments cache and the embedded database. Two
processes spilling into one spill file lose rows (one drains and truncates what the other is
still appending), so a run that writes candles claims the directory first: an exclusive lock
on ``feedengine.lock`` (``flock`` on Unix, ``LockFileEx`` on Windows, via ``filelock``) that the
operating system releases when the process dies, however it dies, and the holder's pid in
``feedengine.pid`` for the message a second process prints.
"""

import logging
import os
from pathlib import Path
from types import TracebackType

from filelock import FileLock, Timeout

from feedengine.errors import HomeError

log = logging.getLogger(__name__)

LOCK_NAME = "feedengine.lock"
PID_NAME = "feedengine.pid"
#: Temporary files of an atomic write (``CandleEngine.save_checkpoint``): one left behind
#: means its writer was killed mid-write, and only the home's owner writes them.
LEFTOVER_PATTERN = "checkpoint-*.tmp"


def ensure_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed; a path that cannot be used is one line."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise HomeError(
            f"FEEDENGINE_HOME {path} cannot be used: {e.strerror or e} (set FEEDENGINE_HOME "
            "to a folder this user can write)"
        ) from None
    return path


class HomeLock:
    """Exclusive use of a data directory for the life of this process (or until released).

    Parameters
    ----------
    home
        The data directory; created if missing.

    Raises
    ------
    HomeError
        From :meth:`acquire`: the directory cannot be written, or another process holds it
        (the message names its pid).
    """

    def __init__(self, home: Path) -> None:
        self.home = home
        self._lock = FileLock(home / LOCK_NAME, blocking=False)

    def acquire(self) -> "HomeLock":
        ensure_dir(self.home)
        try:
            self._lock.acquire()
        except Timeout:
            raise HomeError(
                f"FEEDENGINE_HOME {self.home} is in use by another feedengine process "
                f"(pid {self.holder() or 'unknown'}); one data directory belongs to one "
                "process: give this run its own FEEDENGINE_HOME (PG_CONN_STR can still name "
                "the same database)"
            ) from None
        except OSError as e:
            raise HomeError(f"cannot lock FEEDENGINE_HOME {self.home}: {e.strerror}") from None
        try:
            (self.home / PID_NAME).write_text(f"{os.getpid()}\n")
        except OSError as e:
            self._lock.release()
            raise HomeError(f"cannot write to FEEDENGINE_HOME {self.home}: {e.strerror}") from None
        for leftover in self.home.glob(LEFTOVER_PATTERN):
            log.info("removing %s, left by a run that was killed while writing it", leftover)
            leftover.unlink(missing_ok=True)
        return self

    def holder(self) -> int | None:
        """The pid written by the process holding the lock (None if unreadable)."""
        try:
            return int((self.home / PID_NAME).read_text().strip())
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self._lock.is_locked:
            (self.home / PID_NAME).unlink(missing_ok=True)
            self._lock.release()

    def __enter__(self) -> "HomeLock":
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
