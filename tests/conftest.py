"""Shared fixtures: a real PostgreSQL database per test session, clean tables per test.

With DATABASE_URL set, the suite creates (and finally drops) its own database on that server.
Without it, the suite starts an embedded PostgreSQL (the `pgserver` package) in a temporary
directory, as `make test` does on a machine with no server.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine, make_url

from app import migrate
from app.config import Settings
from app.db import create_db_engine
from app.logging import configure_logging
from app.main import create_app
from app.models import Base
from tests.factories import ISSUED_KEYS, Tenants
from tests.worlds import Music, build_world


@pytest.fixture(scope="session", autouse=True)
def _logging() -> None:
    """Logs go through the standard library (so `caplog` sees them), as in the service."""
    configure_logging(level="INFO", fmt="console")


class LogCapture(logging.Handler):
    """Keeps the text of every log record that reaches the root logger."""

    def __init__(self) -> None:
        super().__init__(level=logging.NOTSET)
        self.lines: list[str] = []
        self._plain = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.name} {record.msg!s} {record.args!s}"
        if record.exc_info:
            text += self._plain.formatException(record.exc_info)
        self.lines.append(text)


KEY_SHAPE = re.compile(r"el_(?:operator|label|ai_company|auditor)_[A-Za-z0-9_-]{20,}")


def leaked_keys(lines: list[str], known: set[str]) -> list[str]:
    """Lines holding an API key: one the suite created, or anything shaped like a key."""
    return [line for line in lines if KEY_SHAPE.search(line) or any(k in line for k in known)]


@pytest.fixture(scope="session", autouse=True)
def _no_key_in_any_log() -> Iterator[None]:
    """Every log line of the whole run is searched for API keys at the end."""
    capture = LogCapture()
    logging.getLogger().addHandler(capture)
    yield
    logging.getLogger().removeHandler(capture)
    leaks = leaked_keys(capture.lines, ISSUED_KEYS)
    assert not leaks, f"API keys in the logs: {leaks[:3]}"


def _server_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        return Settings(database_url=url).database_url or url
    from pgserver import get_server  # type: ignore[attr-defined]

    server = get_server(tmp_path_factory.mktemp("embedded-pg"), cleanup_mode="delete")
    return server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh database at the latest migration, dropped after the session."""
    server = make_url(_server_url(tmp_path_factory))
    name = f"echoledger_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url, pool_size=5)
    yield engine
    engine.dispose()


PROCRASTINATE_TABLES = [
    "procrastinate_events",
    "procrastinate_periodic_defers",
    "procrastinate_jobs",
    "procrastinate_workers",
]


@pytest.fixture(autouse=True)
def _clean_tables(request: pytest.FixtureRequest) -> None:
    """Each test that touches the database starts from empty tables."""
    if "engine" not in request.fixturenames and "client" not in request.fixturenames:
        return
    engine: Engine = request.getfixturevalue("engine")
    ours = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        # Replica mode skips the append-only triggers that guard the ledger in production.
        # DELETE beats TRUNCATE here: tables are tiny and TRUNCATE recreates their files.
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        for table in PROCRASTINATE_TABLES + ours:
            conn.execute(sa.text(f'DELETE FROM "{table}"'))


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        log_format="console",
        log_level="WARNING",
        run_worker=False,
    )


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def tenants(client: TestClient, engine: Engine) -> Tenants:
    return Tenants(client, engine)


@pytest.fixture(scope="session")
def music(tmp_path_factory: pytest.TempPathFactory) -> Music:
    """Synthesised pieces, written once per session."""
    return Music(tmp_path_factory.mktemp("music"))


@pytest.fixture
def world(
    client: TestClient, tenants: Tenants, settings: Settings, engine: Engine, music: Music
) -> dict[str, Any]:
    """A label with a catalogue of indexed tracks, and an AI company (see tests/worlds.py)."""
    return build_world(client, tenants, settings, engine, music)
