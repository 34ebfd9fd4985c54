"""Configuration from the environment and ``.env`` (SPEC section 8), validated at start-up.

Every variable, its default and meaning is listed in ``.env.example``; command-line flags
override them. The seed service's names are kept.
"""

import io
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import load_dotenv
from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict

from feedengine import brokers
from feedengine.brokers.angelone.config import AngelConfig
from feedengine.brokers.kite.instruments import KITE_API_ROOT
from feedengine.candles import DEFAULT_INTERVALS, parse_intervals
from feedengine.errors import ConfigError
from feedengine.sessions import Session, parse_sessions
from feedengine.tables import (
    DEFAULT_TABLE_TEMPLATE,
    TableNames,
    check_table_name,
    check_template,
)
from feedengine.textfile import TextFileError, read_text

#: Default data directory: embedded PostgreSQL, spill file, checkpoints, instrument cache.
DEFAULT_HOME = Path("~/.local/share/feedengine").expanduser()
DEFAULT_HEARTBEAT_S = 30.0
#: Kite's candles of a session are final a little after it closes (issue 11's default).
DEFAULT_RECONCILE_AFTER_CLOSE = 15.0
DEFAULT_WS_URL = "wss://ws.kite.trade"
#: Metrics are for this machine's Prometheus unless METRICS_ADDR says otherwise.
DEFAULT_METRICS_ADDR = "127.0.0.1"


def _bool(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name}={text!r}: expected true or false")


def _path(text: str | None) -> Path | None:
    return None if text is None else Path(text).expanduser()


def _check_dsn(dsn: str) -> None:
    """Raise :class:`ConfigError` for a ``PG_CONN_STR`` libpq cannot parse."""
    try:
        conninfo_to_dict(dsn)
    except ProgrammingError as err:
        reason = str(err).strip().splitlines()[0]
        raise ConfigError(f"PG_CONN_STR: not a PostgreSQL connection string: {reason}") from None


def _number(name: str, text: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r}: expected a number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={text!r}: expected a number from {low:g} to {high:g}")
    return value


@dataclass(frozen=True)
class Config:
    """All settings of a run."""

    home: Path = DEFAULT_HOME
    #: Whose live feed (``--broker``): a replay takes its broker from the tick file.
    broker: str = brokers.DEFAULT_BROKER
    pg_conn_str: str | None = None
    candle_table_name: str | None = None
    candle_table_template: str = DEFAULT_TABLE_TEMPLATE
    symbols_query: str | None = None
    intervals: tuple[int, ...] = DEFAULT_INTERVALS
    sessions: dict[str, Session] = field(default_factory=dict)
    grace_s: float = 2.0
    #: Minutes after a session's close to reconcile it with Kite's candles; 0: never.
    reconcile_after_close: float = DEFAULT_RECONCILE_AFTER_CLOSE
    kite_api_key: str | None = None
    kite_access_token: str | None = None
    kite_access_token_file: Path | None = None
    #: The ``.env`` file ``KITE_ACCESS_TOKEN`` came from (read again on a 403); None: the
    #: process's environment, or no token.
    kite_token_env_file: Path | None = None
    kite_ws_url: str = DEFAULT_WS_URL
    kite_api_root: str = KITE_API_ROOT
    angel: AngelConfig = field(default_factory=AngelConfig)
    heartbeat_interval: float = DEFAULT_HEARTBEAT_S
    log_level: str = "INFO"
    mqtt_broker: str | None = None
    mqtt_port: int | None = None
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    mqtt_use_tls: bool = False
    #: With TLS, the CA certificates (PEM) the broker's must be signed by; None: the system's.
    mqtt_ca_file: str | None = None
    mqtt_topic_prefix: str = "feedengine"
    service_id: str = field(default_factory=socket.gethostname)
    #: Serve Prometheus metrics on this port (0: any free one); None: no metrics.
    metrics_port: int | None = None
    metrics_addr: str = DEFAULT_METRICS_ADDR

    @property
    def table_names(self) -> TableNames:
        """The candle table of any interval."""
        return TableNames(self.candle_table_template, self.candle_table_name)

    @property
    def table_5min(self) -> str:
        return self.table_names(5)

    @property
    def spill_path(self) -> Path:
        return self.home / "spill.bin"

    def checkpoint_path(self, mode: str) -> Path:
        """Kernel checkpoint of a mode (``live`` or ``replay``): they never mix."""
        return self.home / f"checkpoint-{mode}.npz"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Config":
        """Read and validate the environment (``os.environ`` by default).

        Raises
        ------
        ConfigError
            Naming the first bad variable.
        """
        e = dict(os.environ if env is None else env)

        def get(name: str) -> str | None:
            value = e.get(name, "").strip()
            return value or None

        try:
            intervals = tuple(parse_intervals(get("CANDLE_INTERVALS") or "1,5,15"))
        except ValueError as err:
            raise ConfigError(f"CANDLE_INTERVALS: {err}") from None
        try:
            sessions = parse_sessions(get("SESSIONS") or "")
        except ValueError as err:
            raise ConfigError(f"SESSIONS: {err}") from None
        template = get("CANDLE_TABLE_TEMPLATE") or DEFAULT_TABLE_TEMPLATE
        try:
            check_template(template)
        except ValueError as err:
            raise ConfigError(f"CANDLE_TABLE_TEMPLATE={template!r}: {err}") from None
        five_minute = get("CANDLE_TABLE_NAME")
        try:
            if five_minute:
                check_table_name(five_minute)
        except ValueError as err:
            raise ConfigError(f"CANDLE_TABLE_NAME: {err}") from None
        dsn = get("PG_CONN_STR")
        if dsn:
            _check_dsn(dsn)
        level = (get("LOG_LEVEL") or "INFO").upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"LOG_LEVEL={level!r}: expected DEBUG, INFO, WARNING or ERROR")
        broker = brokers.get(get("BROKER") or brokers.DEFAULT_BROKER).name
        port = get("MQTT_PORT")
        tls = _bool("MQTT_USE_TLS", get("MQTT_USE_TLS") or "false")
        metrics_port = get("METRICS_PORT")
        ca_file = get("MQTT_CA_FILE")
        if ca_file and not tls:
            raise ConfigError("MQTT_CA_FILE is set but MQTT_USE_TLS is not true")
        if get("MQTT_PASSWORD") and not get("MQTT_USERNAME"):
            raise ConfigError("MQTT_PASSWORD is set but MQTT_USERNAME is not")
        return cls(
            home=Path(get("FEEDENGINE_HOME") or DEFAULT_HOME).expanduser(),
            broker=broker,
            pg_conn_str=dsn,
            candle_table_name=five_minute,
            candle_table_template=template,
            symbols_query=get("SYMBOLS_QUERY"),
            intervals=intervals,
            sessions=sessions,
            grace_s=_number("CANDLE_GRACE_SECONDS", get("CANDLE_GRACE_SECONDS") or "2", 0, 60),
            reconcile_after_close=_number(
                "RECONCILE_AFTER_CLOSE",
                get("RECONCILE_AFTER_CLOSE") or str(DEFAULT_RECONCILE_AFTER_CLOSE),
                0,
                24 * 60,
            ),
            kite_api_key=get("KITE_API_KEY"),
            kite_access_token=get("KITE_ACCESS_TOKEN"),
            kite_access_token_file=_path(get("KITE_ACCESS_TOKEN_FILE")),
            kite_ws_url=get("KITE_WS_URL") or DEFAULT_WS_URL,
            kite_api_root=get("KITE_API_ROOT") or KITE_API_ROOT,
            angel=AngelConfig.from_env(e),
            heartbeat_interval=_number(
                "HEARTBEAT_INTERVAL", get("HEARTBEAT_INTERVAL") or "30", 1, 3600
            ),
            log_level=level,
            mqtt_broker=get("MQTT_BROKER"),
            mqtt_port=int(_number("MQTT_PORT", port, 1, 65535)) if port else None,
            mqtt_username=get("MQTT_USERNAME"),
            mqtt_password=get("MQTT_PASSWORD"),
            mqtt_use_tls=tls,
            mqtt_ca_file=str(_path(ca_file)) if ca_file else None,
            mqtt_topic_prefix=get("MQTT_TOPIC_PREFIX") or "feedengine",
            service_id=get("SERVICE_ID") or socket.gethostname(),
            metrics_port=(
                int(_number("METRICS_PORT", metrics_port, 0, 65535)) if metrics_port else None
            ),
            metrics_addr=get("METRICS_ADDR") or DEFAULT_METRICS_ADDR,
        )

    def tables(self, intervals: tuple[int, ...] | None = None) -> dict[int, str]:
        """Candle table name per interval."""
        return self.table_names.of(intervals or self.intervals)


def load_env_file(path: Path) -> set[str]:
    """Add the settings of a ``.env`` file to the environment (never overriding it).

    Returns
    -------
    set of str
        The names the file set (those the environment did not have).

    Raises
    ------
    ConfigError
        The file cannot be read or is not UTF-8 text (a UTF-8 or UTF-16 byte-order mark is
        fine).
    """
    if not path.exists():
        return set()
    try:
        text = read_text(path, "env file")
    except TextFileError as e:
        raise ConfigError(str(e)) from None
    before = set(os.environ)
    load_dotenv(stream=io.StringIO(text), override=False)
    return set(os.environ) - before
