"""This process's identity in the database, and whether another process is still alive.

Each service process picks a random boot id and holds a session-level advisory lock on it over
a connection of its own. PostgreSQL releases the lock the moment that connection ends, which
happens when the process dies (kill -9 included), so "is boot N alive" is exact and needs no
clock: the lock is held or it is not. Work claimed in the database (an Idempotency-Key being
processed) records the boot that claimed it; a claim whose boot is gone can be taken over at
once instead of after a timeout.

Two live processes drawing the same id (one chance in 2^31) would only make a dead one's claims
look alive, which falls back to the timeout.
"""

from __future__ import annotations

import secrets
import threading
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from app.logging import get_logger

log = get_logger(__name__)

# First key of the two-key advisory locks that mark live boots ("ELBT").
BOOT_LOCK_SPACE = 0x454C_4254


_pg_locks = sa.table(
    "pg_locks",
    sa.column("locktype"),
    sa.column("database"),
    sa.column("classid"),
    sa.column("objid"),
    sa.column("objsubid"),
    sa.column("granted"),
)
_this_database = sa.text(
    "(SELECT oid FROM pg_database WHERE datname = current_database())"
).columns(sa.column("oid"))


def live(boot_column: Any) -> sa.ColumnElement[bool]:
    """SQL: the boot in `boot_column` holds its lock (its process is alive)."""
    locks = _pg_locks.c
    return sa.exists().where(
        locks.locktype == "advisory",
        locks.granted.is_(True),
        locks.objsubid == 2,
        locks.database == _this_database.scalar_subquery(),
        sa.cast(locks.classid, sa.BigInteger) == BOOT_LOCK_SPACE,
        sa.cast(locks.objid, sa.BigInteger) == boot_column,
    )


class Boot:
    """Holds this process's boot lock; `keep` re-takes it after the database restarted."""

    def __init__(self, engine: Engine, *, boot_id: int | None = None) -> None:
        self.engine = engine
        self.id = boot_id if boot_id is not None else secrets.randbelow(2**31 - 2) + 1
        self._connection: Connection | None = None
        self._lock = threading.Lock()

    def hold(self) -> None:
        """Take the lock (idempotent while the connection lives)."""
        with self._lock:
            if self._connection is not None:
                return
            connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            connection.execute(sa.select(sa.func.pg_advisory_lock(BOOT_LOCK_SPACE, self.id)))
            self._connection = connection
            log.info("boot.held", boot_id=self.id)

    def keep(self) -> None:
        """Check the lock's connection; after a database restart, take the lock again."""
        with self._lock:
            connection = self._connection
        if connection is not None:
            try:
                connection.execute(sa.select(1))
                return
            except sa.exc.DBAPIError:
                log.warning("boot.lock_lost", boot_id=self.id)
                with self._lock:
                    self._connection = None
                connection.invalidate()
        self.hold()

    def release(self) -> None:
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            # The connection goes back to the pool, which keeps session locks: unlock first.
            try:
                connection.execute(sa.select(sa.func.pg_advisory_unlock(BOOT_LOCK_SPACE, self.id)))
            except sa.exc.DBAPIError:
                connection.invalidate()
            connection.close()
