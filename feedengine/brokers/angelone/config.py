"""Angel One's settings: credentials and addresses, from the environment.

===========================  =========================================================
``ANGEL_API_KEY``            the SmartAPI app's API key (``x-api-key``, ``X-PrivateKey``)
``ANGEL_CLIENT_CODE``        the Angel One account's client code (``x-client-code``)
``ANGEL_PIN``                the account's PIN (the login's ``password``)
``ANGEL_TOTP_SECRET``        the base32 secret of the account's TOTP (authenticator) key
``ANGEL_WS_URL``             WebSocket 2.0 address (default :data:`WS_URL`)
``ANGEL_API_ROOT``           REST root of the login (default :data:`API_ROOT`)
``ANGEL_SCRIP_MASTER_URL``   the instruments list (default :data:`SCRIP_MASTER_URL`)
===========================  =========================================================

The two addresses and the scrip master's are overridden for the local Angel server
(:mod:`feedengine.brokers.angelone.mockserver`).
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass

from feedengine.errors import ConfigError

#: SmartAPI's streaming endpoint (``SmartWebSocketV2.ROOT_URI`` in the official SDK).
WS_URL = "wss://smartapisocket.angelone.in/smart-stream"
#: SmartAPI's REST root (``SmartConnect._rootUrl`` in the official SDK).
API_ROOT = "https://apiconnect.angelone.in"
#: Every instrument of every exchange, one JSON array, served without login.
SCRIP_MASTER_URL = (
    "https://margincalculator.angelbroking.com/OpenAPI_File/files/OpenAPIScripMaster.json"
)
#: The credentials a live run needs, in the order a missing one is named.
CREDENTIALS = ("ANGEL_API_KEY", "ANGEL_CLIENT_CODE", "ANGEL_PIN", "ANGEL_TOTP_SECRET")


@dataclass(frozen=True)
class AngelConfig:
    """Angel One's settings of a run (credentials may be None until a live run needs them)."""

    api_key: str | None = None
    client_code: str | None = None
    pin: str | None = None
    totp_secret: str | None = None
    ws_url: str = WS_URL
    api_root: str = API_ROOT
    scrip_master_url: str = SCRIP_MASTER_URL

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "AngelConfig":
        """The ``ANGEL_*`` variables of ``env`` (``os.environ`` by default); blanks are unset."""
        e = os.environ if env is None else env

        def get(name: str) -> str | None:
            return e.get(name, "").strip() or None

        return cls(
            api_key=get("ANGEL_API_KEY"),
            client_code=get("ANGEL_CLIENT_CODE"),
            pin=get("ANGEL_PIN"),
            totp_secret=get("ANGEL_TOTP_SECRET"),
            ws_url=get("ANGEL_WS_URL") or WS_URL,
            api_root=get("ANGEL_API_ROOT") or API_ROOT,
            scrip_master_url=get("ANGEL_SCRIP_MASTER_URL") or SCRIP_MASTER_URL,
        )

    def require_credentials(self) -> tuple[str, str, str, str]:
        """``(api_key, client_code, pin, totp_secret)``.

        Raises
        ------
        ConfigError
            Naming every missing variable at once.
        """
        values = (self.api_key, self.client_code, self.pin, self.totp_secret)
        missing = [name for name, value in zip(CREDENTIALS, values, strict=True) if not value]
        if missing:
            raise ConfigError(
                f"missing {', '.join(missing[:-1])}{' and ' if len(missing) > 1 else ''}"
                f"{missing[-1]} (Angel One's credentials; see .env.example)"
            )
        api_key, client_code, pin, totp_secret = values
        assert api_key and client_code and pin and totp_secret
        return api_key, client_code, pin, totp_secret
