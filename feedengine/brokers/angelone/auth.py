"""Log in to Angel One SmartAPI: client code, PIN and TOTP → a JWT and a feed token.

The login goes through the official SDK's REST client (``smartapi-python``,
``SmartConnect.generateSession``), imported only when a live run logs in, with its side
effects neutralised (:func:`smart_connect`):

- at import, ``SmartApi.smartConnect`` GETs ``https://api.ipify.org`` to learn the public
  IP, with no timeout, and then overwrites the answer with a constant in a ``finally``: the
  request is made to no purpose and could hang an offline start, so it is answered locally;
- each ``SmartConnect()`` creates ``logs/<date>/app.log`` under the current directory;
- its logger prints a failed request's headers and body, which hold the API key, the PIN
  and the TOTP, to standard error and that file.

A refused login (a wrong PIN, TOTP or API key) is one :class:`~feedengine.errors.AuthError`
line with Angel's own message; credentials are never logged. The variables are listed in
:mod:`feedengine.brokers.angelone.config`.
"""

import binascii
import logging
import threading
import types
import warnings
from dataclasses import dataclass
from typing import Any

import pyotp
import requests

from feedengine.brokers.angelone.config import AngelConfig
from feedengine.errors import AuthError, ConfigError, FeedError

#: Seconds the SDK waits for each REST answer (its own default is 7).
LOGIN_TIMEOUT_S = 10.0

_sdk_lock = threading.Lock()
_sdk: types.ModuleType | None = None


@dataclass(frozen=True)
class Session:
    """What the WebSocket needs after a login (the tokens are valid until midnight)."""

    api_key: str
    client_code: str
    jwt_token: str
    feed_token: str
    refresh_token: str

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header: ``Bearer <JWT>``."""
        return f"Bearer {self.jwt_token}"


class AngelTotp(pyotp.TOTP):
    """A TOTP of a secret Angel One issued, whatever its length.

    pyotp 2.12 refuses secrets under 112 bits (NIST's advice for making new ones); this
    secret is Angel's, not ours to judge, and a refusal would stop a valid login.
    """

    min_secret_length_bits = 0


class _NoPublicIp:
    """What the SDK's import-time ``requests.get('https://api.ipify.org')`` gets instead."""

    text = ""


def smart_connect() -> Any:
    """The SDK's ``SmartConnect`` class, imported once with its side effects neutralised.

    Raises
    ------
    FeedError
        ``smartapi-python`` is not installed.
    """
    global _sdk
    with _sdk_lock:
        if _sdk is None:
            real_get = requests.get
            # The module binds ``get`` at import (``from requests import get``) and calls it
            # in its class body; afterwards the name is never used again.
            requests.get = lambda *args, **kwargs: _NoPublicIp()  # type: ignore[assignment]
            try:
                import logzero

                logzero.logger.disabled = True  # its class body logs a failed host lookup
                from SmartApi import smartConnect
            except ImportError as e:
                raise FeedError(
                    f"Angel One needs the smartapi-python package ({e}); reinstall feedengine"
                ) from None
            finally:
                requests.get = real_get
            logzero.logger.disabled = False
            # Rebound in the SDK module's namespace only: no log folder, no log file, and
            # no log line carrying a credential (a refused login logs the PIN and TOTP).
            smartConnect.os = types.SimpleNamespace(
                path=smartConnect.os.path, makedirs=lambda *args, **kwargs: None
            )
            smartConnect.logzero = types.SimpleNamespace(logfile=lambda *args, **kwargs: None)
            silent = logging.getLogger(f"{__name__}.sdk")
            silent.disabled = True
            smartConnect.logger = silent
            _sdk = smartConnect
    return _sdk.SmartConnect


def totp_now(secret: str) -> str:
    """The current 6-digit TOTP of a base32 ``secret``.

    Raises
    ------
    ConfigError
        ``secret`` is not base32 text.
    """
    try:
        return str(AngelTotp(secret.replace(" ", "").upper()).now())
    except (binascii.Error, ValueError):
        raise ConfigError(
            "ANGEL_TOTP_SECRET is not a base32 TOTP secret (the text key shown when the "
            "authenticator was enabled, not a 6-digit code)"
        ) from None


def login(config: AngelConfig, *, timeout_s: float = LOGIN_TIMEOUT_S) -> Session:
    """Log in with the configured credentials; return the stream's tokens.

    Raises
    ------
    ConfigError
        A credential is missing, or the TOTP secret is not base32.
    AuthError
        Angel One refused the login (its message and error code are in the line).
    FeedError
        The login could not be reached or answered what cannot be read.
    """
    api_key, client_code, pin, secret = config.require_credentials()
    totp = totp_now(secret)
    with warnings.catch_warnings():  # its TLS settings use ssl's deprecated OP_NO_TLSv1
        warnings.simplefilter("ignore", DeprecationWarning)
        client = smart_connect()(api_key=api_key, root=config.api_root, timeout=timeout_s)
    where = f"Angel One's login at {config.api_root}"
    # Trap: generateSession reads answer["status"], which the answer of Angel's gateway
    # to a bad API key ({"success", "message", "errorCode"}) lacks: it raises KeyError, and
    # the refusal is lost. The answers are kept, to read the login's own.
    answers: list[Any] = []
    post = client._postRequest

    def keep(route: str, params: Any = None) -> Any:
        answers.append(post(route, params))
        return answers[-1]

    client._postRequest = keep
    try:
        client.generateSession(client_code, pin, totp)
    except requests.RequestException as e:
        raise FeedError(f"cannot reach {where}: {type(e).__name__}") from None
    except (KeyError, TypeError):  # its reading of a refusal, or of a refused profile
        pass
    except Exception as e:  # the SDK's own errors (an answer that is not JSON)
        raise FeedError(f"{where} answered what cannot be read ({type(e).__name__}: {e})") from None
    answer = answers[0] if answers else None
    if not isinstance(answer, dict):
        raise FeedError(f"{where} answered what cannot be read: {answer!r:.200}")
    data = answer.get("data")
    if answer.get("status") is not True or not isinstance(data, dict):
        # Angel's REST errors say "errorcode"; its gateway's (a bad API key) "errorCode".
        message = answer.get("message")
        code = answer.get("errorcode") or answer.get("errorCode")
        raise AuthError(
            f"Angel One refused the login of client code {client_code}: "
            f"{message or 'no reason given'}{f' ({code})' if code else ''}; check "
            "ANGEL_API_KEY, ANGEL_PIN and ANGEL_TOTP_SECRET"
        )
    try:
        return Session(
            api_key=api_key,
            client_code=client_code,
            jwt_token=str(data["jwtToken"]).removeprefix("Bearer "),
            feed_token=str(data["feedToken"]),
            refresh_token=str(data["refreshToken"]),
        )
    except KeyError:
        raise FeedError(f"{where} answered without the JWT and feed token") from None
