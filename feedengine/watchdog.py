"""A watchdog for blocking calls on a socket: shuts the socket down when one overruns.

libpq blocks in the kernel while it waits for the server. When the server's processes are
stopped (SIGSTOP, a frozen VM) but its kernel still ACKs every packet, nothing ends that
wait: TCP keepalives and ``tcp_user_timeout`` see a healthy connection, and
``statement_timeout`` runs in the stopped server. Shutting the socket down from another
thread makes the blocked call return an error at once, on Linux and on Windows alike.
"""

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)


def shut_down(fd: int) -> None:
    """Shut the socket ``fd`` down for reading and writing, leaving the descriptor open (its
    owner closes it)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:  # closed meanwhile: nothing is blocked on it
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already shut down or disconnected
    finally:
        sock.detach()


class Watchdog:
    """Bounds blocking operations on one socket at a time, from a thread of its own.

    The thread starts with the first :meth:`guard` and ends at :meth:`close`.
    """

    def __init__(self, name: str = "watchdog") -> None:
        self._name = name
        self._cond = threading.Condition()
        self._fd: int | None = None
        self._deadline = 0.0
        self._closed = False
        self._thread: threading.Thread | None = None
        #: Whether the last guarded block overran and its socket was shut down.
        self.fired = False

    @contextlib.contextmanager
    def guard(self, fd: int, seconds: float) -> Iterator[None]:
        """Shut socket ``fd`` down if the block has not ended ``seconds`` from now."""
        with self._cond:
            if self._thread is None:
                self._closed = False
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._fd, self._deadline, self.fired = fd, time.monotonic() + seconds, False
            self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._fd = None
                self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                if self._fd is None:
                    self._cond.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                log.debug("watchdog: shutting socket %d down", self._fd)
                shut_down(self._fd)
                self.fired = True
                self._fd = None

    def __enter__(self) -> "Watchdog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the thread (a guarded block still running is no longer bounded)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
