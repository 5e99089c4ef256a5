"""Database engine, sessions and the declarative base.

One request, one transaction: services only `flush()`; `get_session` commits when the request
succeeds and rolls back when it raises.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, Request
from sqlalchemy import MetaData
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from app.config import Settings
from app.logging import get_logger

log = get_logger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

EMBEDDED_DATABASE = "echoledger"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: sa.DateTime(timezone=True)}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


_embedded_lock = threading.Lock()


def resolve_database_url(settings: Settings) -> str:
    """The configured URL, or that of the embedded PostgreSQL under the data directory."""
    if settings.database_url:
        return settings.database_url
    with _embedded_lock:
        return _start_embedded(settings)


def _start_embedded(settings: Settings) -> str:
    from pgserver import get_server  # type: ignore[attr-defined]  # only without DATABASE_URL

    pgdata = settings.embedded_pg_dir.resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    log.info("embedded_postgres.start", pgdata=str(pgdata))
    # "stop": the server stops when the last process using it exits; the data stays.
    server = get_server(pgdata, cleanup_mode="stop")
    admin = sa.create_engine(_psycopg(server.get_uri()), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.scalar(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": EMBEDDED_DATABASE}
            )
            if not exists:
                conn.execute(sa.text(f'CREATE DATABASE "{EMBEDDED_DATABASE}"'))
    finally:
        admin.dispose()
    return _psycopg(server.get_uri(database=EMBEDDED_DATABASE))


def _psycopg(uri: str) -> str:
    return uri.replace("postgresql://", "postgresql+psycopg://", 1)


def libpq_conninfo(sqlalchemy_url: str) -> str:
    """A libpq URI (for psycopg and procrastinate) from a SQLAlchemy URL."""
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def create_db_engine(url: str, **kwargs: Any) -> Engine:
    options: dict[str, Any] = {"pool_size": 20, "max_overflow": 20, "pool_pre_ping": True}
    options.update(kwargs)
    return sa.create_engine(url, **options)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def get_session(request: Request) -> Iterator[Session]:
    """FastAPI dependency: one session and one transaction per request."""
    with transaction(request.app.state.service.sessions) as session:
        yield session


# scope="function": commit before the response is sent, so a 2xx always means "stored".
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
