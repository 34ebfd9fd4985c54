"""Fixtures shared by tests and benchmarks: a real PostgreSQL (the test database, else an
embedded server) and a real MQTT broker.

Tests never touch a user's settings: every variable ``.env.example`` lists is removed from
the environment before any test runs, so ``PG_CONN_STR`` (a production database) can never be
written by a test, in this process or a child.
"""

import os
import socket
import uuid
from pathlib import Path

import psycopg
import pytest
from dotenv import dotenv_values

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
for _name in dotenv_values(Path(__file__).parent / ".env.example"):
    os.environ.pop(_name, None)


@pytest.fixture(scope="session")
def pg_dsn(tmp_path_factory) -> str:
    """``FEEDENGINE_TEST_DSN`` when set, else an embedded server (never ``PG_CONN_STR``)."""
    dsn = os.environ.get("FEEDENGINE_TEST_DSN")
    if dsn:
        yield dsn
        return
    from feedengine.database import embedded_dsn

    home = Path(tmp_path_factory.mktemp("pghome"))
    yield embedded_dsn(home)
    stop_embedded(home)


@pytest.fixture
def pg(pg_dsn):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def table_prefix(pg):
    """A unique table-name template for one test; its tables are dropped afterwards."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    yield prefix + "_{interval}min"
    rows = pg.execute(
        "SELECT tablename FROM pg_tables WHERE tablename LIKE %s", (prefix + "%",)
    ).fetchall()
    for (name,) in rows:
        pg.execute(f'DROP TABLE IF EXISTS "{name}"')


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def mqtt_broker():
    """``(host, port)`` of a real MQTT broker: 127.0.0.1:1883 when it answers, else a local
    amqtt broker started for the session."""
    if _answers("127.0.0.1", 1883):
        yield "127.0.0.1", 1883
        return
    from tests.brokers import start_amqtt

    port, stop = start_amqtt()
    yield "127.0.0.1", port
    stop()


def stop_embedded(home: Path) -> None:
    """Stop the embedded server of ``home``, if one runs (it outlives its process)."""
    if not (home / "pgdata" / "postmaster.pid").exists():
        return
    from pgserver._commands import pg_ctl

    user = "pgserver" if os.geteuid() == 0 else None  # as pgserver runs it
    pg_ctl(["-m", "fast", "-w", "stop"], pgdata=home / "pgdata", user=user)


@pytest.fixture
def fresh_home(tmp_path):
    """An empty FEEDENGINE_HOME; an embedded server a test starts in it is stopped after."""
    yield tmp_path
    stop_embedded(tmp_path)
