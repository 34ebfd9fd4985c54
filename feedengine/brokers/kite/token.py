"""Kite's access token, read again from where it came from when Kite refuses it.

Kite's access tokens expire every morning (6 AM IST). A long-running stream that meets a
403 asks its token source for the current token: when the operator has written a new one
where the run's token came from, the stream reconnects with it. A token source is a
callable returning the current token; :func:`token_source` builds the run's from its
settings:

- ``KITE_ACCESS_TOKEN_FILE``: the named file holds the token (surrounding whitespace
  ignored), read on every call;
- else ``KITE_ACCESS_TOKEN`` from the ``.env`` file the run loaded: that file is parsed
  again on every call (that variable only);
- else ``KITE_ACCESS_TOKEN`` from the process's environment, which cannot change: the
  source returns it as it was.
"""

import io
from collections.abc import Callable
from pathlib import Path

from dotenv import dotenv_values

from feedengine.errors import ConfigError
from feedengine.textfile import TextFileError, read_text

#: Returns the current access token (raises :class:`~feedengine.errors.ConfigError` when
#: its file cannot be read or holds none).
TokenSource = Callable[[], str]

TOKEN_NAME = "KITE_ACCESS_TOKEN"
FILE_NAME = "KITE_ACCESS_TOKEN_FILE"


def constant(token: str) -> TokenSource:
    """A token that never changes (the process's environment, a test's literal)."""
    return lambda: token


def from_file(path: Path) -> TokenSource:
    """The token ``path`` holds, read on every call."""

    def read() -> str:
        try:
            token = read_text(path, f"{FILE_NAME}: the token file").strip()
        except TextFileError as e:
            raise ConfigError(str(e)) from None
        if not token:
            raise ConfigError(f"{FILE_NAME}: the token file {path} is empty")
        return token

    return read


def from_env_file(path: Path) -> TokenSource:
    """``KITE_ACCESS_TOKEN`` of the ``.env`` file ``path``, parsed again on every call."""

    def read() -> str:
        try:
            text = read_text(path, "env file")
        except TextFileError as e:
            raise ConfigError(str(e)) from None
        token = (dotenv_values(stream=io.StringIO(text)).get(TOKEN_NAME) or "").strip()
        if not token:
            raise ConfigError(f"{TOKEN_NAME}: no longer set in {path}")
        return token

    return read


def token_source(
    token: str | None, token_file: Path | None, env_file: Path | None
) -> TokenSource | None:
    """The run's token source, or None when no token is configured.

    Parameters
    ----------
    token
        ``KITE_ACCESS_TOKEN`` as the run read it (the environment wins over ``.env``).
    token_file
        ``KITE_ACCESS_TOKEN_FILE``.
    env_file
        The ``.env`` file ``token`` came from; None: it came from the process's environment.

    Raises
    ------
    ConfigError
        Both settings given, or the token file cannot be read or is empty.
    """
    if token_file is not None:
        if token is not None:
            raise ConfigError(f"set {TOKEN_NAME} or {FILE_NAME}, not both")
        source = from_file(token_file)
        source()  # a missing or empty file is the start's error, not the first 403's
        return source
    if token is None:
        return None
    return constant(token) if env_file is None else from_env_file(env_file)
