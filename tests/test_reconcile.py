"""``--reconcile`` end to end: a replayed day in PostgreSQL made equal to the candles the
local Kite server serves, through kiteconnect, real sockets and the command line."""

import signal
from datetime import date, datetime, time
from decimal import Decimal

import pytest

from feedengine.brokers.kite.history import KITE_INTERVALS, aggregate
from feedengine.brokers.kite.instruments import KiteInstrument
from feedengine.brokers.kite.mockserver import MockKite, tick_file_source
from feedengine.brokers.kite.segments import DIVISORS, exchange_for
from feedengine.reconcile import day_range_ns
from feedengine.sessions import DEFAULT_SESSIONS, IST
from feedengine.simulator import SimConfig, simulate
from feedengine.sink import price_text
from feedengine.tickfile import TickReader
from tests.processes import DEADLINE_S, Service, clean_env, cli

DAY = date(2024, 1, 15)
INTERVALS = (1, 5, 15, 75)  # 75 is not Kite's: built from its minute candles
KEY, TOKEN = "k", "t"


@pytest.fixture(scope="module")
def day_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("reconcile") / "day.ticks"
    simulate(path, SimConfig(instruments=8, ticks=12_000, seed=21, date=DAY))
    return path


@pytest.fixture
def kite(day_file):
    """The local Kite server with the whole day's candles (a closed day)."""
    messages, rows = tick_file_source(day_file)
    server = MockKite(messages, rows, api_key=KEY, access_token=TOKEN, history="day").start()
    yield server
    server.stop()


def env_for(server, pg_dsn, table_prefix):
    return {
        "PG_CONN_STR": pg_dsn,
        "CANDLE_TABLE_TEMPLATE": table_prefix,
        "CANDLE_INTERVALS": ",".join(map(str, INTERVALS)),
        "KITE_API_KEY": KEY,
        "KITE_ACCESS_TOKEN": TOKEN,
        "KITE_API_ROOT": server.root,
        "KITE_WS_URL": server.url,
    }


def table_candles(pg, table_prefix, minutes):
    """{(symbol, exchange, IST start): (o, h, l, c, v)} of one interval's table."""
    rows = pg.execute(
        "SELECT tradingsymbol, exchange, datetime, open, high, low, close, volume "
        f'FROM "{table_prefix.format(interval=minutes)}"'
    ).fetchall()
    return {(s, e, dt): (o, h, lo, c, v) for s, e, dt, o, h, lo, c, v in rows}


def kite_candles(server, instruments, minutes, day=DAY):
    """What the server serves (a non-native interval built from its minute candles), as
    :func:`table_candles` reads a table."""
    first, last = day_range_ns(day)
    out = {}
    for inst in instruments:
        div = int(DIVISORS[inst.segment])
        native = minutes in KITE_INTERVALS
        rows = server.served(inst.instrument_token, minutes if native else 1, first, last - 1)
        if not native:
            session = DEFAULT_SESSIONS[exchange_for(inst.segment, inst.exchange)]
            rows = aggregate(rows, minutes, session)
        for r in rows.tolist():
            start, volume, *prices = r
            dt = datetime.fromtimestamp(start // 10**9, IST).replace(tzinfo=None)
            values = tuple(Decimal(price_text(p, div)) for p in prices)
            out[(inst.tradingsymbol, inst.exchange, dt)] = (*values, volume)
    return out


def report_row(stdout, minutes):
    """``(checked, equal, corrected, filled, extra)`` of one interval in the report."""
    line = next(x for x in stdout.splitlines() if x.startswith(f"{minutes}m "))
    return tuple(int(v.replace(",", "")) for v in line.split()[1:6])


def test_reconcile_makes_the_tables_equal_to_kites_candles(
    pg, pg_dsn, table_prefix, day_file, kite, tmp_path
):
    env = env_for(kite, pg_dsn, table_prefix)
    replay = cli("--replay", day_file, env=env, home=tmp_path)
    assert replay.returncode == 0, replay.stderr
    instruments = [KiteInstrument.from_dict(d) for d in TickReader(day_file).instruments]
    infy = next(i for i in instruments if i.exchange == "NSE" and i.segment == 1)
    five, one, fifteen = (table_prefix.format(interval=m) for m in (5, 1, 15))
    at = datetime.combine(DAY, time(10, 0))
    # The stored day differs from Kite's in every way there is:
    pg.execute(
        f'UPDATE "{five}" SET high = high + 1 WHERE tradingsymbol = %s AND datetime = %s',
        (infy.tradingsymbol, at),
    )  # corrected: high
    pg.execute(
        f'DELETE FROM "{one}" WHERE tradingsymbol = %s AND datetime = %s', (infy.tradingsymbol, at)
    )  # filled
    pg.execute(
        f'INSERT INTO "{fifteen}" VALUES (%s, %s, %s, 1, 1, 1, 1, 1)',
        (datetime.combine(DAY, time(8, 0)), infy.tradingsymbol, infy.exchange),
    )  # extra: kept and reported
    later = datetime.combine(DAY, time(10, 5))
    served = kite_candles(kite, [infy], 5)[(infy.tradingsymbol, infy.exchange, later)]
    kite.override_candle(
        infy.instrument_token,
        "5minute",
        later.replace(tzinfo=IST),
        (*(int(p * 100) for p in served[:4]), served[4] + 100),
    )  # corrected: Kite's volume differs from the engine's
    first = cli("--reconcile", DAY.isoformat(), env=env, home=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "reconciled 2024-01-15 against Kite: 8 instruments, 4 intervals" in first.stdout
    checked, equal, corrected, filled, extra = report_row(first.stdout, 5)
    assert (corrected, filled, extra) == (2, 0, 0) and checked == equal + 2
    assert "high 1, volume 1" in first.stdout
    assert report_row(first.stdout, 1)[2:] == (0, 1, 0)
    assert report_row(first.stdout, 15)[2:] == (0, 0, 1)
    assert "extra: NSE:" in first.stdout and "08:00 is stored but not among Kite's" in first.stdout
    for minutes in INTERVALS:
        want = kite_candles(kite, instruments, minutes)
        got = table_candles(pg, table_prefix, minutes)
        if minutes == 15:
            del got[(infy.tradingsymbol, infy.exchange, datetime.combine(DAY, time(8, 0)))]
        assert got == want, minutes
    recorded = pg.execute(
        "SELECT interval, checked, corrected, filled, extra, corrected_fields "
        "FROM feedengine_reconciliations WHERE candle_table = %s AND day = %s "
        "AND tradingsymbol = %s",
        (five, DAY, infy.tradingsymbol),
    ).fetchone()
    assert recorded[0] == 5 and recorded[2:] == (2, 0, 0, "high 1, volume 1")
    again = cli("--reconcile", DAY.isoformat(), env=env, home=tmp_path)
    assert again.returncode == 0, again.stderr
    for minutes in INTERVALS:
        checked, equal, corrected, filled, _extra = report_row(again.stdout, minutes)
        assert (corrected, filled) == (0, 0) and checked == equal > 0  # a no-op


def test_a_429_storm_and_server_errors_still_end_with_every_candle(
    pg, pg_dsn, table_prefix, day_file, kite, tmp_path
):
    """Two reconciliations at once (each under its own 3/s limit: 6 requests/s at the
    server, which answers the excess 429) while the server answers some 5xx."""
    env = env_for(kite, pg_dsn, table_prefix)
    instruments = [KiteInstrument.from_dict(d) for d in TickReader(day_file).instruments]
    kite.inject_history(2, status=503)
    kite.inject_history(1, status=502)
    runs = [
        Service(
            "--reconcile",
            DAY.isoformat(),
            "--symbols",
            *(f"{i.exchange}:{i.tradingsymbol}" for i in half),
            env=clean_env(tmp_path / f"home{k}", **env),
        )
        for k, half in enumerate((instruments[::2], instruments[1::2]))
    ]
    for run in runs:
        assert run.finish(DEADLINE_S) == 0, run.stderr
    for minutes in INTERVALS:
        assert table_candles(pg, table_prefix, minutes) == kite_candles(kite, instruments, minutes)
    statuses = [r.status for r in kite.history_requests]
    assert statuses.count(429) > 0 and statuses.count(503) == 2 and statuses.count(502) == 1


@pytest.mark.parametrize(
    ("args", "text", "status"),
    [
        (["--reconcile", "2024-02-30"], "bad day '2024-02-30'", 2),
        (["--reconcile", "2999-01-01"], "is in the future", 2),
        (["--reconcile", "2024-01-15", "--symbols", "NOPE"], "1 unknown symbol(s)", 1),
        (["--reconcile", "2024-01-15", "--csv", "x.csv"], "drop --csv", 2),
        (["--reconcile", "2024-01-14"], "no candles stored between 2024-01-14", 1),
    ],
)
def test_bad_reconcile_input_is_one_line(pg_dsn, table_prefix, kite, tmp_path, args, text, status):
    proc = cli(*args, env=env_for(kite, pg_dsn, table_prefix), home=tmp_path)
    assert proc.returncode == status, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and text in errors[0] and "Traceback" not in proc.stderr, proc.stderr


def test_backfill_loads_the_previous_trading_days_before_going_live(
    pg, pg_dsn, table_prefix, tmp_path
):
    from feedengine.service import previous_weekdays
    from feedengine.tickfile import TickWriter, make_meta

    first, last = previous_weekdays(datetime.now(IST).date(), 2)
    days = sorted({first, last})
    path = tmp_path / "past.ticks"
    configs = [
        SimConfig(instruments=6, ticks=3_000, seed=day.toordinal(), date=day) for day in days
    ]
    from feedengine.simulator import instruments as sim_instruments
    from feedengine.simulator import messages as sim_messages

    with TickWriter(path, make_meta("test", sim_instruments(configs[0]))) as writer:
        for config in configs:
            for recv_ns, message in sim_messages(config):
                writer.write(recv_ns, message)
    messages, rows = tick_file_source(path)
    server = MockKite(messages, rows, api_key=KEY, access_token=TOKEN, history="day").start()
    try:
        instruments = [KiteInstrument.from_dict(d) for d in TickReader(path).instruments]
        env = env_for(server, pg_dsn, table_prefix)
        symbols = [f"{i.exchange}:{i.tradingsymbol}" for i in instruments]
        service = Service("--symbols", *symbols, "--backfill", "2", env=clean_env(tmp_path, **env))
        service.wait_for_line("backfill: reconciled")
        service.send(signal.SIGTERM)
        assert service.finish() == 0, service.stderr
        for minutes in INTERVALS:
            want = {}
            for day in days:
                want |= kite_candles(server, instruments, minutes, day)
            assert table_candles(pg, table_prefix, minutes) == want
    finally:
        server.stop()


def test_an_instrument_without_history_fails_alone(
    pg, pg_dsn, table_prefix, day_file, kite, tmp_path
):
    """A token Kite has no history for: one clear line, exit 1, nothing written for it; the
    other instruments are reconciled."""
    instruments = [KiteInstrument.from_dict(d) for d in TickReader(day_file).instruments]
    ghost = KiteInstrument((999_999 << 8) | 1, "GHOST", "NSE")
    dump = tmp_path / "dump.csv"
    dump.write_text(
        "instrument_token,tradingsymbol,exchange\n"
        + "".join(
            f"{i.instrument_token},{i.tradingsymbol},{i.exchange}\n" for i in [ghost, *instruments]
        )
    )
    symbols = ["GHOST", f"{instruments[0].exchange}:{instruments[0].tradingsymbol}"]
    proc = cli(
        "--reconcile",
        DAY.isoformat(),
        "--symbols",
        *symbols,
        "--instruments-csv",
        dump,
        env=env_for(kite, pg_dsn, table_prefix),
        home=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line or "error:" in line]
    assert errors == [
        "feedengine: error: 1 instrument-day(s) not reconciled (listed above); the rest are"
    ]
    assert "NOT reconciled: NSE:GHOST" in proc.stdout and "Traceback" not in proc.stderr
    for minutes in INTERVALS:
        got = table_candles(pg, table_prefix, minutes)
        assert got == kite_candles(kite, instruments[:1], minutes)  # the other one: all there
