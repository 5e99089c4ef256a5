"""A scratch database for benchmarks: on DATABASE_URL's server, else an embedded PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from app import migrate
from app.config import Settings
from app.db import resolve_database_url


@contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """A fresh database at the latest migration; dropped afterwards."""
    if os.environ.get("DATABASE_URL"):
        server = Settings().database_url or ""
    else:
        server = resolve_database_url(Settings(data_dir=Path(".echoledger/bench")))
    base = make_url(server)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
