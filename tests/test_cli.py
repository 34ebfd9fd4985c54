"""The command line, as a user runs it (subprocesses): every flag, every bad input."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from feedengine.candles import CandleConfig, CandleEngine
from feedengine.pipeline import Pipeline
from feedengine.replay import ReplaySource
from feedengine.sink import MemorySink
from feedengine.spill import SpillFile
from feedengine.tickfile import TickReader

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "sample.ticks"


def cli(*args, env=None, timeout=180, home=None):
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if home is not None:
        base["FEEDENGINE_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "feedengine", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**base, **(env or {})},
        check=False,
    )


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
    record = tmp_path / "sim.ticks"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "feedengine",
            "--simulate",
            "--record",
            str(record),
            "--csv",
            str(tmp_path / "c.csv"),
            "--no-mqtt",
        ],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "FEEDENGINE_HOME": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(6)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "kite connection 0: subscribed" in err
    assert "stopped early" in out
    reader = TickReader(record)
    assert reader.meta["source"] == "kite" and len(reader.instruments) == 50
    assert sum(1 for _ in reader.messages()) >= 3  # heartbeats at least, ticks in hours
    replay = cli("--replay", record, "--csv", tmp_path / "r.csv", home=tmp_path)
    assert replay.returncode == 0, replay.stderr


def expected_rows(intervals=(1, 5, 15)):
    sink = MemorySink()
    source = ReplaySource(SAMPLE)
    Pipeline(CandleEngine(source.instruments, CandleConfig(intervals=intervals)), sink).run(source)
    return sink


def test_sigterm_mid_replay_writes_open_candles_checkpoints_and_resumes(
    pg, pg_dsn, table_prefix, tmp_path
):
    env = {"PG_CONN_STR": pg_dsn, "CANDLE_TABLE_TEMPLATE": table_prefix}
    proc = subprocess.Popen(
        [sys.executable, "-m", "feedengine", "--replay", str(SAMPLE), "--speed", "600"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "FEEDENGINE_HOME": str(tmp_path), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped early" in out
    assert (tmp_path / "checkpoint-replay.npz").exists()
    table = table_prefix.format(interval=1)
    written = pg.execute(f'SELECT count(*), max(datetime) FROM "{table}"').fetchone()
    assert written[0] > 0  # completed and in-progress candles are in the database
    again = cli("--replay", SAMPLE, env=env, home=tmp_path)
    assert again.returncode == 0, again.stderr
    assert not (tmp_path / "checkpoint-replay.npz").exists()
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
    for path in (ROOT / "feedengine").glob("*.py"):
        text = path.read_text()
        read |= {name for name in values if f'"{name}"' in text}
    assert read == set(values), "a variable in .env.example that nothing reads, or vice versa"


def test_second_signal_forces_exit_and_keeps_the_spill(tmp_path):
    # A "database" that accepts TCP and never answers: every attempt hangs for the connect
    # timeout, so the graceful stop is slow and a second signal cuts it short.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        env = {
            "PATH": os.environ["PATH"],
            "FEEDENGINE_HOME": str(tmp_path),
            "PG_CONN_STR": f"postgresql://x@127.0.0.1:{silent.getsockname()[1]}/x",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "feedengine", "--replay", str(SAMPLE), "--speed", "2000"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        spill = tmp_path / "spill.bin"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and spilled_rows(spill) == 0:
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "forced exit; spilled candles stay in the spill file" in err
    assert spilled_rows(spill) > 0


def spilled_rows(path):
    return SpillFile(path).rows if path.exists() else 0
