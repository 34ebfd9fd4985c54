"""The command line, as a user runs it (subprocesses): every flag, every bad input."""

import os
import signal
import socket
import subprocess

import pytest

from feedengine.candles import CandleConfig, CandleEngine
from feedengine.pipeline import Pipeline
from feedengine.replay import ReplaySource
from feedengine.sink import MemorySink
from feedengine.spill import SpillFile
from feedengine.tickfile import TickReader
from tests.processes import ROOT, Service, clean_env, cli, command, ticks_recorded, wait_until

SAMPLE = ROOT / "samples" / "sample.ticks"


def one_error(proc, text):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("feedengine: error: ") and text in errors[0], errors[0]


@pytest.mark.parametrize(
    ("args", "env", "text", "status"),
    [
        (["--bogus"], {}, "unrecognized arguments: --bogus", 2),
        (["--replay", SAMPLE, "--simulate"], {}, "give only one of --replay and --simulate", 2),
        (["--symbols", "A", "--symbols-file", "x"], {}, "give only one of --symbols,", 2),
        (["--test-database", "--replay", SAMPLE], {}, "--test-database runs alone", 2),
        (["--speed", "2"], {}, "--speed applies to --replay only", 2),
        (["--replay", SAMPLE, "--speed", "-1"], {}, "--speed must be 0 or positive", 2),
        (["--replay", SAMPLE, "--record", "x.ticks"], {}, "--record records a live feed", 2),
        (["--no-finalize"], {}, "--no-finalize applies to --replay only", 2),
        (["--replay", SAMPLE, "--intervals", "1,x"], {}, "bad interval 'x'", 2),
        (["--replay", SAMPLE, "--intervals", "5,5"], {}, "interval 5 is listed twice", 2),
        (["--replay", SAMPLE], {"CANDLE_INTERVALS": "0"}, "CANDLE_INTERVALS: bad interval '0'", 2),
        (["--replay", SAMPLE], {"HEARTBEAT_INTERVAL": "0"}, "HEARTBEAT_INTERVAL='0'", 2),
        (["--replay", SAMPLE], {"MQTT_USE_TLS": "maybe"}, "MQTT_USE_TLS='maybe'", 2),
        (["--replay", SAMPLE], {"LOG_LEVEL": "LOUD"}, "LOG_LEVEL='LOUD'", 2),
        (["--replay", SAMPLE], {"SESSIONS": "NSE=10-9"}, "SESSIONS: bad session", 2),
        (["--replay", SAMPLE], {"CANDLE_TABLE_TEMPLATE": "candles"}, "must contain {interval}", 2),
        (["--symbols", "INFY"], {}, "missing KITE_API_KEY and KITE_ACCESS_TOKEN", 2),
        ([], {"KITE_API_KEY": "k", "KITE_ACCESS_TOKEN": "t"}, "which instruments?", 2),
        (["--replay", "missing.ticks"], {}, "cannot read missing.ticks", 2),
        (["--replay", "README.md"], {}, "not a tick file", 1),
        (
            ["--replay", SAMPLE, "--symbols", "INFY", "NOPE", "BSE:TCS"],
            {},
            "2 unknown symbol(s) in the header of sample.ticks: NOPE, BSE:TCS",
            1,
        ),
        (["--replay", SAMPLE, "--symbols-file", "missing.txt"], {}, "cannot read symbols file", 1),
        (
            ["--symbols", "INFY", "--instruments-csv", "missing.csv"],
            {"KITE_API_KEY": "k", "KITE_ACCESS_TOKEN": "t"},
            "cannot read instruments dump",
            1,
        ),
        (
            ["--symbols", "INFY", "--instruments-csv", "README.md"],
            {"KITE_API_KEY": "k", "KITE_ACCESS_TOKEN": "t"},
            "not an instruments dump",
            1,
        ),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, args, env, text, status):
    proc = cli(*args, env=env, home=tmp_path)
    assert proc.returncode == status, proc.stderr
    one_error(proc, text)


def test_help_reads_like_a_manual():
    proc = cli("--help")
    assert proc.returncode == 0
    for flag in (
        "--symbols",
        "--symbols-file",
        "--symbols-from-db",
        "--test-broker",
        "--test-database",
        "--replay",
        "--speed",
        "--simulate",
        "--record",
        "--intervals",
        "--no-mqtt",
        "--log-level",
        "--instruments-csv",
        "--csv",
        "--no-finalize",
        "--env-file",
        "Exit status",
    ):
        assert flag in proc.stdout
    assert cli("--version").stdout.startswith("feedengine ")


def test_replay_flags_symbols_file_intervals_env_file_log_level(tmp_path):
    (tmp_path / "my.env").write_text("CANDLE_INTERVALS=3,75\nLOG_LEVEL=WARNING\n")
    out = tmp_path / "c.csv"
    proc = cli(
        "--replay",
        SAMPLE,
        "--symbols-file",
        "instruments_sample.txt",
        "--csv",
        out,
        "--env-file",
        tmp_path / "my.env",
        "--no-mqtt",
        home=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "candles written    3m" in proc.stdout and "75m" in proc.stdout
    assert " INFO " not in proc.stderr  # LOG_LEVEL=WARNING from the env file
    symbols = {line.split(",")[1] for line in out.read_text().splitlines()[1:]}
    assert len(symbols) == 45 and "NIFTY 50" not in symbols
    debug = cli(
        "--replay",
        SAMPLE,
        "--csv",
        tmp_path / "d.csv",
        "--intervals",
        "1",
        "--log-level",
        "DEBUG",
        home=tmp_path,
    )
    assert debug.returncode == 0 and "DEBUG" in debug.stderr


def test_simulate_and_record_then_replay_the_recording(tmp_path):
    """At any hour: a simulated market of the shipped symbols, recorded, then replayed."""
    record = tmp_path / "sim.ticks"
    service = Service(
        "--simulate",
        "--symbols-file",
        "instruments_sample.txt",
        "--record",
        record,
        "--csv",
        tmp_path / "c.csv",
        "--no-mqtt",
        env=clean_env(tmp_path),
    )
    service.wait_for_line(f"recording every message to {record}")
    assert wait_until(lambda: ticks_recorded(record) >= 3), service.stderr
    service.send(signal.SIGINT)
    assert service.finish() == 0, service.stderr
    assert "stopped early" in service.stdout
    reader = TickReader(record)
    assert reader.meta["source"] == "kite" and len(reader.instruments) == 45
    rows = (tmp_path / "c.csv").read_text().splitlines()[1:]
    assert rows, "in-progress candles are written at the stop"
    replay = cli("--replay", record, "--csv", tmp_path / "r.csv", home=tmp_path)
    assert replay.returncode == 0, replay.stderr
    assert "ticks decoded      0" not in replay.stdout


def expected_rows(intervals=(1, 5, 15)):
    sink = MemorySink()
    source = ReplaySource(SAMPLE)
    Pipeline(CandleEngine(source.instruments, CandleConfig(intervals=intervals)), sink).run(source)
    return sink


def in_progress(checkpoint):
    """The open candles a checkpoint holds: ``{(minutes, symbol, IST start): values}``."""
    from datetime import datetime
    from decimal import Decimal

    import numpy as np

    from feedengine.sessions import IST
    from feedengine.sink import price_text

    symbols = {i.instrument_token: i.tradingsymbol for i in ReplaySource(SAMPLE).instruments}
    with np.load(checkpoint) as data:
        slots, intervals = data["slots"], data["intervals"].tolist()
        bars = data["bars"].reshape(len(slots), len(intervals))
    out = {}
    for slot, j in zip(*np.nonzero(bars["state"] == 1), strict=True):  # BAR_OPEN
        bar = bars[slot, j]
        start = datetime.fromtimestamp(int(bar["start_ns"]) // 10**9, IST).replace(tzinfo=None)
        prices = (Decimal(price_text(int(bar[k]), 100)) for k in ("open", "high", "low", "close"))
        volume = int(bar["last"] - bar["base"]) if bar["last"] >= 0 else 0
        out[(intervals[j], symbols[int(slots["key"][slot])], start)] = (*prices, volume)
    return out


def rows_in(pg, table):
    if pg.execute("SELECT to_regclass(%s)", (f'"{table}"',)).fetchone()[0] is None:
        return 0
    return pg.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]


def test_sigterm_mid_replay_writes_open_candles_checkpoints_and_resumes(
    pg, pg_dsn, table_prefix, tmp_path
):
    env = {"PG_CONN_STR": pg_dsn, "CANDLE_TABLE_TEMPLATE": table_prefix}
    # The sample's 6.6 hours at 600x take 40 s: the first committed candles mean mid-replay.
    service = Service("--replay", SAMPLE, "--speed", "600", env=clean_env(tmp_path, **env))
    table = table_prefix.format(interval=1)
    assert wait_until(lambda: rows_in(pg, table) > 0), service.stderr
    service.send(signal.SIGTERM)
    assert service.finish() == 0, service.stderr
    assert "stopped early" in service.stdout
    checkpoint = tmp_path / "checkpoint-replay.npz"
    open_candles = in_progress(checkpoint)
    assert open_candles  # the replay stopped mid-day, with candles open
    for (minutes, symbol, start), values in open_candles.items():
        row = pg.execute(
            f'SELECT open, high, low, close, volume FROM "{table_prefix.format(interval=minutes)}" '
            "WHERE tradingsymbol = %s AND datetime = %s",
            (symbol, start),
        ).fetchone()
        assert row == values, (minutes, symbol, start)  # written as in-progress rows
    again = cli("--replay", SAMPLE, env=env, home=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "resumed open candles from checkpoint" in again.stderr
    decoded = int(again.stdout.split("ticks decoded")[1].split()[0].replace(",", ""))
    assert 0 < decoded < 22_105  # it went on from where the first run stopped
    assert not checkpoint.exists()
    want = expected_rows()
    for minutes in (1, 5, 15):
        rows = pg.execute(
            f"SELECT datetime, tradingsymbol, open, high, low, close, volume "
            f'FROM "{table_prefix.format(interval=minutes)}"'
        ).fetchall()
        got = {(minutes, sym, dt): (o, h, lo, c, v) for dt, sym, o, h, lo, c, v in rows}
        mine = {
            (m, sym, dt.replace(tzinfo=None)): v
            for (m, sym, _exchange, dt), v in want.candles.items()
            if m == minutes
        }
        assert got == mine


def test_env_example_lists_every_setting_and_parses():
    from dotenv import dotenv_values

    from feedengine.config import Config

    values = {k: v or "" for k, v in dotenv_values(ROOT / ".env.example").items()}
    config = Config.from_env(values)
    assert config.intervals == (1, 5, 15) and config.table_5min == "merged_candles_5min"
    for name in (
        "PG_CONN_STR",
        "CANDLE_TABLE_NAME",
        "KITE_API_KEY",
        "KITE_ACCESS_TOKEN",
        "CANDLE_INTERVALS",
        "HEARTBEAT_INTERVAL",
        "LOG_LEVEL",
        "MQTT_BROKER",
        "MQTT_PORT",
        "MQTT_USERNAME",
        "MQTT_PASSWORD",
        "MQTT_USE_TLS",
    ):
        assert name in values
    read = set()
    for path in (ROOT / "feedengine").rglob("*.py"):
        text = path.read_text()
        read |= {name for name in values if f'"{name}"' in text}
    assert read == set(values), "a variable in .env.example that nothing reads, or vice versa"


def test_second_signal_forces_exit_and_keeps_the_spill(tmp_path):
    # A "database" that accepts TCP and never answers: every attempt hangs for the connect
    # timeout, so the graceful stop is slow and a second signal cuts it short.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        dsn = f"postgresql://x@127.0.0.1:{silent.getsockname()[1]}/x"
        service = Service(
            "--replay", SAMPLE, "--speed", "2000", env=clean_env(tmp_path, PG_CONN_STR=dsn)
        )
        spill = tmp_path / "spill.bin"
        assert wait_until(lambda: spilled_rows(spill) > 0), service.stderr
        service.send(signal.SIGTERM)
        service.wait_for_line("received SIGTERM: stopping")
        service.send(signal.SIGTERM)
        assert service.finish() == 130, service.stderr
    assert "forced exit; spilled candles stay in the spill file" in service.stderr
    assert spilled_rows(spill) > 0


def spilled_rows(path):
    return SpillFile(path).rows if path.exists() else 0


def csv_symbols(path):
    return {line.split(",")[1] for line in path.read_text().splitlines()[1:]}


@pytest.mark.parametrize(
    ("encoding", "bom"), [("utf-8", b"\xef\xbb\xbf"), ("utf-16-le", b"\xff\xfe"), ("utf-8", b"")]
)
def test_symbols_file_saved_by_any_editor(tmp_path, encoding, bom):
    """Regression: a UTF-16 file (Notepad "Unicode") was a traceback, and a UTF-8 BOM glued
    itself to the first name, an invisible unknown symbol."""
    symbols = tmp_path / "symbols.txt"
    symbols.write_bytes(bom + "# mine\r\nINFY\r\nNSE:RELIANCE\r\n".encode(encoding))
    out = tmp_path / "c.csv"
    proc = cli("--replay", SAMPLE, "--symbols-file", symbols, "--csv", out, home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert csv_symbols(out) == {"INFY", "RELIANCE"}


def write_file(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make_args", "text", "status"),
    [
        (
            lambda t: ["--replay", SAMPLE, "--env-file", write_file(t / "x.env", b"A=\xff\xfe1\n")],
            "env file " + "{tmp}/x.env is not UTF-8 text (byte 2 is 0xff)",
            2,
        ),
        (
            lambda t: ["--replay", SAMPLE, "--symbols-file", write_file(t / "s.txt", b"IN\xc3FY")],
            "symbols file {tmp}/s.txt is not UTF-8 text",
            1,
        ),
        (lambda t: ["--replay", SAMPLE, "--csv", "/nonexistent/c.csv"], "cannot write CSV", 1),
        (
            lambda t: ["--replay", SAMPLE, "--symbols", "INFY", "NOPE", "--skip-unknown"],
            None,
            0,
        ),
        (
            lambda t: ["--replay", SAMPLE, "--symbols", "NOPE", "--skip-unknown"],
            "1 unknown symbol(s) in the header of sample.ticks: NOPE",
            1,
        ),
    ],
)
def test_more_bad_input_is_one_clear_line(tmp_path, make_args, text, status):
    args = make_args(tmp_path)
    if status == 0:
        args += ["--csv", tmp_path / "ok.csv"]
    proc = cli(*args, home=tmp_path)
    assert proc.returncode == status, proc.stderr
    if text is None:
        assert "1 unknown symbol(s) in the header of sample.ticks: NOPE; running the other 1" in (
            proc.stderr
        )
        assert csv_symbols(tmp_path / "ok.csv") == {"INFY"}
    else:
        one_error(proc, text.format(tmp=tmp_path))


def test_unusable_home_is_one_line(tmp_path):
    proc = cli("--replay", SAMPLE, "--csv", tmp_path / "c.csv", home="/proc/feedengine")
    assert proc.returncode == 1
    one_error(proc, "FEEDENGINE_HOME /proc/feedengine cannot be used")


def test_tick_file_header_with_bad_instruments_is_one_line(tmp_path):
    from feedengine.tickfile import TickWriter, make_meta

    for instruments, text in (
        ([{"instrument_token": 1}], "lacks 'tradingsymbol'"),
        ([{"instrument_token": "x", "tradingsymbol": "A"}], "instrument_token is not a whole"),
        ([{"instrument_token": 1, "tradingsymbol": 5}], "non-empty tradingsymbol"),
        ("all", "header instruments is not a list"),
    ):
        path = tmp_path / "bad.ticks"
        TickWriter(path, make_meta("test", instruments)).close()
        proc = cli("--replay", path, "--csv", tmp_path / "c.csv", home=tmp_path)
        assert proc.returncode == 1
        one_error(proc, text)


def test_a_second_process_on_the_same_home_is_refused_naming_the_first(tmp_path):
    """Regression: a second process on one FEEDENGINE_HOME drained and truncated the spill
    file the first was still appending to (7,402 of 15,977 rows lost)."""
    first = Service(
        "--replay", SAMPLE, "--speed", "600", "--csv", tmp_path / "a.csv", env=clean_env(tmp_path)
    )
    first.wait_for_line("replay of sample.ticks: 47 instruments")
    second = cli("--replay", SAMPLE, "--csv", tmp_path / "b.csv", home=tmp_path)
    assert second.returncode == 1
    one_error(second, f"FEEDENGINE_HOME {tmp_path} is in use by another feedengine process")
    assert f"(pid {first.proc.pid})" in second.stderr
    first.send(signal.SIGTERM)
    assert first.finish() == 0, first.stderr
    # Released at exit: the next run takes the home.
    again = cli("--replay", SAMPLE, "--csv", tmp_path / "b.csv", home=tmp_path)
    assert again.returncode == 0, again.stderr


def test_leftover_checkpoint_temp_file_is_removed(tmp_path):
    """A double Ctrl-C during the checkpoint write left checkpoint-live.npz*.tmp behind."""
    leftover = tmp_path / "checkpoint-live.npzab12cd.tmp"
    leftover.write_bytes(b"half a checkpoint")
    proc = cli("--replay", SAMPLE, "--csv", tmp_path / "c.csv", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not leftover.exists() and "removing" in proc.stderr


def split_file(path, parts_dir):
    """The sample as two tick files, cut at the middle message."""
    from feedengine.tickfile import TickWriter

    reader = TickReader(path)
    messages = list(reader.messages())
    half = len(messages) // 2
    out = []
    for i, chunk in enumerate((messages[:half], messages[half:])):
        part = parts_dir / f"part{i}.ticks"
        with TickWriter(part, reader.meta) as w:
            for recv_ns, message in chunk:
                w.write(recv_ns, message)
        out.append(part)
    return out


def test_restart_with_other_intervals_resumes_the_common_ones(tmp_path):
    """Regression: other --intervals than the checkpoint's were a traceback, and every run
    then refused until the checkpoint was deleted by hand."""
    first, second = split_file(SAMPLE, tmp_path)
    a = cli(
        "--replay",
        first,
        "--no-finalize",
        "--intervals",
        "1,5,15",
        "--csv",
        tmp_path / "a.csv",
        home=tmp_path,
    )
    assert a.returncode == 0, a.stderr
    b = cli("--replay", second, "--intervals", "5,30", "--csv", tmp_path / "b.csv", home=tmp_path)
    assert b.returncode == 0, b.stderr
    assert "has 1,15-minute candles this run does not build" in b.stderr
    assert "30-minute candles start afresh" in b.stderr
    latest = {}
    for name in ("a.csv", "b.csv"):
        for line in (tmp_path / name).read_text().splitlines()[1:]:
            dt, sym, minutes, *values, exchange = line.split(",")
            if minutes == "5":
                latest[(exchange, sym, dt)] = values
    want = expected_rows((5,))
    assert latest == {
        (e, s, dt.strftime("%Y-%m-%d %H:%M:%S")): [str(x) for x in v]
        for (m, s, e, dt), v in want.candles.items()
    }


def test_checkpoint_that_cannot_be_written_is_one_line(pg_dsn, table_prefix, tmp_path):
    """Disk full while writing the checkpoint was a traceback. A real write failure: the
    process's file-size limit (RLIMIT_FSIZE) makes the checkpoint's write fail with EFBIG."""
    import resource

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    env = {**clean_env(tmp_path), "PG_CONN_STR": pg_dsn, "CANDLE_TABLE_TEMPLATE": table_prefix}
    proc = subprocess.run(
        command("--replay", SAMPLE, "--no-finalize"),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        preexec_fn=small_files,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    one_error(proc, "cannot write checkpoint")
    assert "a restart cannot resume them" in proc.stderr
    assert not list(tmp_path.glob("*.tmp"))


def test_replay_progress_on_a_terminal_reaches_the_end_and_logs_above_it(tmp_path):
    """The hand-made bar moved in 4096-record jumps, ended stuck at 13.7 % and log lines
    glued onto it."""
    import fcntl
    import pty
    import re
    import struct
    import termios

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # MQTT unreachable: a warning logged mid-replay
    env = clean_env(tmp_path, MQTT_BROKER="127.0.0.1", MQTT_PORT=str(dead))
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen(
        command("--replay", SAMPLE, "--speed", "6000", "--csv", tmp_path / "c.csv"),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=follower,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(60) == 0
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", b"".join(chunks).decode())
    pieces = [p for p in re.split(r"[\r\n]+", text) if p.strip()]
    bars = [p for p in pieces if "sample.ticks:" in p and "%" in p]
    assert bars and "100%" in bars[-1] and "22,105 ticks" in bars[-1]
    assert len({p.split("%")[0] for p in bars}) > 3  # it moved on the way
    logs = [p for p in pieces if " WARNING " in p or " INFO " in p]
    assert any("unreachable" in p for p in logs)
    assert all(re.match(r"\d{4}-\d\d-\d\d ", p) for p in logs), logs  # none glued to the bar


def test_the_embedded_database_is_one_line_not_its_log(fresh_home):
    """pgserver narrated initdb and pg_ctl in 3-19 INFO lines."""
    proc = cli("--test-database", home=fresh_home)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("embedded PostgreSQL: postgresql://"), lines
