"""The socket watchdog: a blocked call on a socket returns once its bound has passed."""

import socket
import threading
import time

from feedengine.watchdog import Watchdog


def test_a_blocked_receive_returns_when_its_bound_passes():
    a, b = socket.socketpair()
    with a, b, Watchdog() as watchdog:
        started = time.monotonic()
        with watchdog.guard(a.fileno(), 0.2):
            assert a.recv(1) == b""  # nothing is ever sent: only the shutdown ends this
        assert watchdog.fired and time.monotonic() - started < 10
        assert a.fileno() >= 0  # shut down, not closed: its owner closes it


def test_a_block_that_ends_in_time_is_left_alone():
    before = threading.active_count()
    a, b = socket.socketpair()
    with a, b:
        with Watchdog() as watchdog:
            for _ in range(3):
                with watchdog.guard(a.fileno(), 30):
                    b.sendall(b"x")
                    assert a.recv(1) == b"x"
            assert not watchdog.fired
        b.sendall(b"y")
        assert a.recv(1) == b"y"
    assert threading.active_count() == before
