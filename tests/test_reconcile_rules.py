"""Reconciliation's rules without a server: comparing, the days asked for, open sessions."""

from datetime import date, datetime, time
from decimal import Decimal

import numpy as np
import pytest

from feedengine.brokers.kite.history import HISTORY_DTYPE
from feedengine.brokers.kite.instruments import KiteInstrument
from feedengine.errors import UsageError
from feedengine.reconcile import compare, parse_days, refuse_open_sessions, to_records
from feedengine.sessions import IST, Session

T0 = 1_705_290_300 * 10**9  # 2024-01-15 09:15 IST
MIN = 60 * 10**9


def kite(*rows):
    out = np.zeros(len(rows), HISTORY_DTYPE)
    for i, (k, o, h, lo, c, v) in enumerate(rows):
        out[i] = (T0 + k * MIN, v, o, h, lo, c)
    return out


def stored(k, o, h, lo, c, v):
    return (T0 + k * MIN, *(None if p is None else Decimal(p) / 100 for p in (o, h, lo, c)), v)


def test_equal_corrected_filled_and_extra_are_told_apart():
    theirs = kite(
        (0, 100, 110, 90, 105, 7),  # equal
        (1, 105, 112, 101, 111, 9),  # high and volume differ
        (2, 111, 111, 111, 111, 1),  # missing
    )
    mine = [
        stored(0, 100, 110, 90, 105, 7),
        stored(1, 105, 111, 101, 111, 8),
        stored(5, 1, 1, 1, 1, 1),  # Kite has no such candle
    ]
    tally, write, extra = compare(mine, theirs, 100)
    assert (tally.checked, tally.equal, tally.corrected, tally.filled, tally.extra) == (
        3,
        1,
        1,
        1,
        1,
    )
    assert tally.fields == {"high": 1, "volume": 1}
    assert write.tolist() == [1, 2]
    assert extra == [T0 + 5 * MIN]


def test_a_stored_price_finer_than_the_unit_or_null_differs():
    theirs = kite((0, 100, 110, 90, 105, 7))
    finer = [(T0, Decimal("1.001"), Decimal("1.10"), Decimal("0.90"), Decimal("1.05"), 7)]
    null = [(T0, Decimal("1.00"), None, Decimal("0.90"), Decimal("1.05"), None)]
    assert compare(finer, theirs, 100)[0].fields == {"open": 1}
    assert compare(null, theirs, 100)[0].fields == {"high": 1, "volume": 1}


def test_kite_rows_become_complete_records_of_the_instrument():
    inst = KiteInstrument(408065, "INFY", "NSE")
    records = to_records(kite((0, 100, 110, 90, 105, 7)), inst, 5)
    assert records[0]["symbol"] == b"INFY" and records[0]["exchange"] == b"NSE"
    assert records[0]["minutes"] == 5 and records[0]["final"] == 1
    assert records[0]["decimals"] == 2 and records[0]["high"] == 110


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2024-13-01", "bad day '2024-13-01'"),
        ("yesterday", "bad day 'yesterday'"),
        ("2024-01-15..2024-01-16..2024-01-17", "bad day"),
        ("2024-01-16..2024-01-15", "ends before it starts"),
        ("2024-01-20", "2024-01-20 is in the future (today is 2024-01-19 in IST)"),
    ],
)
def test_bad_days_are_one_clear_line(text, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_days(text, date(2024, 1, 19))


def test_days_and_ranges():
    assert parse_days("2024-01-15", date(2024, 1, 19)) == (date(2024, 1, 15),) * 2
    assert parse_days("2024-01-15..2024-01-19", date(2024, 1, 19)) == (
        date(2024, 1, 15),
        date(2024, 1, 19),
    )


def test_a_day_whose_session_is_open_is_refused_until_after_its_close():
    nse, mcx = Session(time(9, 15), time(15, 30)), Session(time(9, 0), time(23, 55))
    day = date(2024, 1, 19)
    at = datetime(2024, 1, 19, 15, 40, tzinfo=IST)
    with pytest.raises(UsageError, match=r"has not closed; reconcile it after 15:45 IST"):
        refuse_open_sessions(day, [nse], at, 15)
    refuse_open_sessions(day, [nse], datetime(2024, 1, 19, 15, 45, tzinfo=IST), 15)
    with pytest.raises(UsageError, match="after 00:10 IST"):  # MCX closes at 23:55
        refuse_open_sessions(day, [nse, mcx], datetime(2024, 1, 19, 16, 0, tzinfo=IST), 15)
    refuse_open_sessions(date(2024, 1, 18), [nse, mcx], at, 15)  # an earlier day is closed
