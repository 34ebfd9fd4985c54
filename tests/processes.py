"""feedengine as a user runs it, in a subprocess the test can wait on (never sleep on).

Every run gets a clean environment and ``--env-file`` of nothing, so a developer's own
``.env`` (with a production ``PG_CONN_STR``, say) never reaches a test. :func:`cli` runs a
command to its end; :class:`Service` reads the process's output as it comes, on threads of
its own, so a test waits for a log line or a condition with a deadline, then signals it.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from feedengine.errors import TickFileError
from feedengine.tickfile import TickReader

ROOT = Path(__file__).resolve().parents[1]
#: Longest a test waits for a process to reach a state before it fails (seconds).
DEADLINE_S = 90.0


#: Goes first on every command line; a test's own --env-file, later, wins.
NO_ENV_FILE = ("--env-file", os.devnull)


def command(*args: object) -> list[str]:
    return [sys.executable, "-m", "feedengine", *NO_ENV_FILE, *map(str, args)]


def cli(
    *args: object, env: dict[str, str] | None = None, home: Path | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m feedengine ARGS`` to its end in a clean environment plus ``env``."""
    return subprocess.run(
        command(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**clean_env(home), **(env or {})},
        check=False,
    )


def clean_env(home: Path | None = None, **extra: str) -> dict[str, str]:
    """An environment with nothing of the user's feedengine settings (never their database)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if home is not None:
        env["FEEDENGINE_HOME"] = str(home)
    return {**env, **extra}


def wait_until(condition: Callable[[], bool], timeout: float = DEADLINE_S) -> bool:
    """Poll ``condition`` until it holds (True) or the deadline passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


class Service:
    """``python -m feedengine ARGS`` with its output collected as it arrives.

    Parameters
    ----------
    args
        Command-line arguments.
    env
        The whole environment (see :func:`clean_env`).
    """

    def __init__(self, *args: object, env: dict[str, str], cwd: Path = ROOT) -> None:
        self.proc = subprocess.Popen(
            command(*args),
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, lines: list[str]) -> None:
        for line in stream:
            with self._changed:
                lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    def wait_for_line(self, text: str, timeout: float = DEADLINE_S) -> None:
        """Block until ``text`` appears on stderr; fail if the process ends or time runs out."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while text not in self.stderr:
                left = deadline - time.monotonic()
                reading = any(r.is_alive() for r in self._readers)
                ended = self.proc.poll() is not None and not reading
                assert left > 0 and not ended, f"no {text!r} on stderr:\n{self.stderr[-3000:]}"
                self._changed.wait(min(left, 0.5))

    def send(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def finish(self, timeout: float = DEADLINE_S) -> int:
        """Wait for the exit; return the status with all output read."""
        status = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return status

    def kill(self) -> int:
        self.proc.kill()
        return self.finish()


def ticks_recorded(path: Path) -> int:
    """Tick messages (not heartbeats) in a tick file that may still be being written: 0
    before it exists or before its header is (the writer creates it, then writes that)."""
    try:
        return sum(len(m) > 1 for _, m in TickReader(path).messages())
    except (FileNotFoundError, TickFileError):
        return 0
