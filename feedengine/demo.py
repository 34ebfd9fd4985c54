"""``make demo``: replay the shipped sample into PostgreSQL and show what landed.

Uses ``PG_CONN_STR`` when set, else the embedded server in the data directory, which keeps
running afterwards so that ``psql`` can look at the candles.
"""

import sys
from pathlib import Path

from dotenv import load_dotenv

from feedengine import cli
from feedengine.config import Config
from feedengine.database import connect, embedded_dsn

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "sample.ticks"


def main() -> int:
    load_dotenv(".env", override=False)
    config = Config.from_env()
    dsn = config.pg_conn_str or embedded_dsn(config.home)
    print(f"== replaying {SAMPLE.name} into {dsn}\n", flush=True)
    status = cli.main(["--replay", str(SAMPLE)])
    if status:
        return status
    table = config.table_5min
    with connect(dsn) as conn:
        rows = conn.execute(
            f'SELECT datetime, tradingsymbol, open, high, low, close, volume FROM "{table}" '
            "WHERE tradingsymbol IN ('INFY', 'RELIANCE') ORDER BY datetime, tradingsymbol "
            "LIMIT 6"
        ).fetchall()
        count = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()
    print(f"\n== {count[0] if count else 0} rows in {table}; the first few:")
    print(
        f"{'datetime (IST)':<20} {'symbol':<10} {'open':>9} {'high':>9} {'low':>9} "
        f"{'close':>9} {'volume':>8}"
    )
    for dt, sym, o, h, lo, c, v in rows:
        print(f"{dt:%Y-%m-%d %H:%M}     {sym:<10} {o:>9} {h:>9} {lo:>9} {c:>9} {v:>8}")
    print(f"\n== look yourself:\n   psql '{dsn}' -c 'SELECT * FROM {table} LIMIT 10'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
