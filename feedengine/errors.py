"""Every failure a user can meet, as one hierarchy with its exit status (SPEC section 8).

Modules convert what goes wrong at their boundary (``OSError``, ``UnicodeError``, psycopg's
errors, a bad JSON header ...) into one of these, with a message that names the problem and
the thing it concerns. The command line prints ``feedengine: error: <message>`` and exits with
:attr:`FeedError.exit_status`: 2 for a bad command line or configuration, 1 for any other
failure. Anything else that escapes is a bug, reported as one line too, with its traceback
saved to a file.
"""

import os

#: Exit status of a failure: database, broker, files, rows left in the spill file.
EXIT_FAILURE = 1
#: Exit status of a bad command line or configuration.
EXIT_USAGE = 2


class FeedError(Exception):
    """A failure reported as one line; :attr:`exit_status` is the process's exit status."""

    exit_status = EXIT_FAILURE


class UsageError(FeedError):
    """A bad command line or configuration (exit status 2)."""

    exit_status = EXIT_USAGE


class ConfigError(UsageError):
    """A bad setting: the message names the variable and what is wrong."""


class HomeError(FeedError):
    """The data directory (``FEEDENGINE_HOME``) cannot be used: unwritable, or in use."""


class CheckpointError(FeedError):
    """The candle checkpoint cannot be written or read."""


class TickFileError(FeedError):
    """A tick file that cannot be read: bad header, or a corrupt record before the end."""

    def __init__(self, path: os.PathLike[str] | str, offset: int, reason: str) -> None:
        super().__init__(f"{path}: {reason} at byte offset {offset}")
        self.path = str(path)
        self.offset = offset
        self.reason = reason


class RecordingError(FeedError):
    """A tick file cannot be written (``--record``, the simulator's output)."""


class InstrumentsError(FeedError):
    """The instruments cannot be had or read, or symbols are not among them."""


class SchemaError(FeedError):
    """An existing candle table that feedengine cannot write (missing or odd columns)."""


class SinkUnavailable(FeedError):
    """The destination cannot be reached now (server down or hung, connection lost).

    The flusher spills the rows and retries later.
    """


class SinkDataError(FeedError):
    """The destination refuses these rows (a schema that cannot hold them).

    Retrying cannot help: the flusher spills the rows, so nothing is lost, and stops.
    """


class SpillError(FeedError):
    """The spill file is damaged before its end, or was written by another version."""


class FlusherError(FeedError):
    """The flusher thread failed; the cause is chained and its message included."""


class AuthError(FeedError):
    """The broker refused the credentials (Kite: HTTP 403): renew the access token."""


class HistoryError(FeedError):
    """Kite's historical candles cannot be had: a request Kite refuses (an instrument it
    has no history for, a bad range), an answer that cannot be read, or retries that ran
    out of time. The message names the instrument."""


class StreamError(UsageError):
    """The stream cannot run as configured (too many tokens, bad mode)."""


class BrokerError(FeedError):
    """``--test-broker`` found a problem."""
