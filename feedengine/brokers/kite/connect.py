"""A run of Kite's live feed from the configuration: credentials and the daily token, the
instruments dump, the stream and the historical client; and ``--test-broker``'s three steps.

Everything Kite-specific the command line needs, imported only when Kite's live feed,
``--test-broker`` or ``--reconcile`` runs (the REST client and the WebSocket library are not
needed to replay a file).
"""

from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

from feedengine.brokers.kite import wire
from feedengine.brokers.kite.history import KiteHistory
from feedengine.brokers.kite.instruments import KiteInstrument, fetch_dump, read_dump
from feedengine.brokers.kite.live import LiveSource
from feedengine.brokers.kite.ticker import KiteStream
from feedengine.brokers.kite.token import TokenSource, token_source
from feedengine.config import Config
from feedengine.errors import BrokerError, UsageError
from feedengine.instruments import resolve
from feedengine.stream import TickProbe


def credentials(config: Config) -> tuple[str, TokenSource]:
    """Kite's API key and the source of its access token (read again on a 403)."""
    source = token_source(
        config.kite_access_token, config.kite_access_token_file, config.kite_token_env_file
    )
    missing = [
        n
        for n, v in (("KITE_API_KEY", config.kite_api_key), ("KITE_ACCESS_TOKEN", source))
        if not v
    ]
    if missing:
        raise UsageError(
            f"missing {' and '.join(missing)} (set in the environment or .env, the token "
            "also by KITE_ACCESS_TOKEN_FILE; or use --replay / --simulate)"
        )
    assert config.kite_api_key and source
    return config.kite_api_key, source


def instruments(config: Config, today: date, dump_csv: Path | None) -> list[KiteInstrument]:
    """Kite's instruments dump: the CSV given, else today's download (cached)."""
    if dump_csv is not None:
        return read_dump(dump_csv)
    key, token = credentials(config)
    return fetch_dump(key, token(), config.home, today, config.kite_api_root)


def history(config: Config) -> KiteHistory:
    """Kite's historical candles, with the run's token source."""
    key, token = credentials(config)
    return KiteHistory(key, token, config.kite_api_root, sessions=config.sessions)


def live_source(config: Config, chosen: list[KiteInstrument], record: Path | None) -> LiveSource:
    """The stream of ``chosen`` (the token read again on a 403)."""
    key, token = credentials(config)
    return LiveSource(chosen, config.kite_ws_url, key, token, record=record)


def test_broker(
    config: Config, dump: Callable[[], list[KiteInstrument]], wanted: list[str] | None
) -> Iterator[str]:
    """``--test-broker``: profile, instruments dump and a short stream, step by step.

    The stream passes only when a tick of a subscribed token arrives: Kite's heartbeats
    alone prove the connection, not the data (they come when the market is closed too).
    Yields a line per step as it passes; a failed step raises its one line.
    """
    from kiteconnect import KiteConnect
    from kiteconnect.exceptions import KiteException, TokenException

    key, token = credentials(config)
    kite = KiteConnect(key, access_token=token(), root=config.kite_api_root)
    try:
        profile = kite.profile()
    except TokenException:
        raise BrokerError(
            "profile: the access token was refused (expired? Kite's tokens expire every "
            "morning at 6 AM)"
        ) from None
    except KiteException as e:
        raise BrokerError(f"profile: Kite refused the credentials: {e}") from None
    except OSError as e:
        raise BrokerError(f"profile: cannot reach Kite at {config.kite_api_root}: {e}") from None
    user = f"{profile.get('user_id')} ({profile.get('user_name')})"
    yield f"1/3 credentials ok: token works for {user}"
    available = dump()
    yield f"2/3 instruments dump: {len(available):,} instruments"
    chosen = resolve(wanted, available, "the instruments dump") if wanted else available[:3]
    subscribed = {i.instrument_token for i in chosen}
    probe = TickProbe(
        lambda _recv_ns, message: (
            len(message) > 1
            and not subscribed.isdisjoint(wire.decode(message)["instrument_token"].tolist())
        )
    )
    stream = KiteStream(config.kite_ws_url, key, token, sorted(subscribed), probe)
    probe.run(stream, config.kite_ws_url, len(subscribed), "tokens")
    yield f"3/3 stream ok: {len(chosen)} tokens, ticks arrived ({probe.messages} messages)"
