"""Fixtures shared by tests and benchmarks: a real PostgreSQL (the configured one, else
an embedded server)."""

import os
import socket
import uuid
from pathlib import Path

import psycopg
import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def pg_dsn(tmp_path_factory) -> str:
    """``FEEDENGINE_TEST_DSN`` or ``PG_CONN_STR`` when set, else an embedded server."""
    dsn = os.environ.get("FEEDENGINE_TEST_DSN") or os.environ.get("PG_CONN_STR")
    if dsn:
        return dsn
    from feedengine.database import embedded_dsn

    return embedded_dsn(Path(tmp_path_factory.mktemp("pghome")))


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
