"""Migrations build the schema from nothing and take it all the way back down."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from app import migrate
from app.models import Base


@pytest.fixture
def empty_database(database_url: str) -> Iterator[str]:
    server = make_url(database_url)
    name = f"echoledger_mig_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _relations(url: str) -> set[str]:
    """Tables, sequences, views, indexes, functions and types in the public schema."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return set(
                conn.scalars(
                    sa.text(
                        "SELECT c.relname FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
                        "AND c.relkind IN ('r', 'S', 'v', 'i') "
                        "UNION SELECT p.proname FROM pg_proc p JOIN pg_namespace n "
                        "ON n.oid = p.pronamespace WHERE n.nspname = 'public' "
                        "UNION SELECT t.typname FROM pg_type t JOIN pg_namespace n "
                        "ON n.oid = t.typnamespace WHERE n.nspname = 'public' "
                        "AND t.typtype IN ('e', 'c') AND t.typrelid = 0"
                    )
                )
            )
    finally:
        engine.dispose()


def test_upgrade_to_head_then_down_to_base_leaves_nothing(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    created = _relations(empty_database)
    assert {t.name for t in Base.metadata.sorted_tables} <= created
    assert {
        "procrastinate_jobs",
        "procrastinate_defer_jobs_v1",
        "procrastinate_job_status",
    } <= created

    migrate.downgrade(empty_database, "base")
    assert _relations(empty_database) <= {"alembic_version", "alembic_version_pkc"}

    migrate.upgrade(empty_database)  # and back up again: downgrades left no debris
    assert {t.name for t in Base.metadata.sorted_tables} <= _relations(empty_database)


def test_models_match_migrations(database_url: str) -> None:
    """Autogenerate finds nothing to do: the ORM models and the migrations agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    ours = [d for d in diff if "procrastinate" not in repr(d)]
    assert ours == []
