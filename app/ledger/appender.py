"""Group commit for everything that appends to the ledger's hash chain.

The chain is serialised: each append must see the hash of the one before it, so the chain lock
is held until commit, and a commit waits for the disk (about 6 ms on the machines we measured).
One append per commit would cap the ledger near 170 transactions per second. Instead, callers
hand their work to this appender; a single thread takes everything queued, runs the pieces
under one chain lock and commits them together. A piece that fails is refused alone; the
others commit. Callers block until their piece is durable.

`ledger.append` checks balance before writing, so the database's own balance check (deferred
to commit) only ever fires on a bug, and then fails the whole batch rather than one piece.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from app.clock import Clock, system_clock
from app.ledger.service import ChainHead
from app.logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")
Work = Callable[[Session, ChainHead], T]


class AppenderClosed(RuntimeError):
    """The appender was shut down before the work could run."""


@dataclass(slots=True)
class _Item:
    work: Work[Any]
    future: Future[Any]


class LedgerAppender:
    """Runs `work(session, head)` callables in batched, chain-locked transactions.

    One per process, shared by every flow that moves money; `clock` dates what they append.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        max_batch: int = 128,
        clock: Clock = system_clock,
    ) -> None:
        self.sessions = sessions
        self.max_batch = max_batch
        self.clock = clock
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="ledger-appender", daemon=True)
        self._thread.start()

    def run(self, work: Work[T], *, timeout: float = 60.0) -> T:
        """Run `work` in the next batch and return its result once committed.

        `work` must only write through the session it is given and must append to the chain
        through the head it is given. If it raises, its writes roll back and the exception is
        re-raised here; if the batch's commit fails, every piece in it gets that error.
        """
        if self._closed:
            raise AppenderClosed("the ledger appender is closed")
        future: Future[T] = Future()
        self._queue.put(_Item(work, future))
        return future.result(timeout=timeout)

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join(timeout=30)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._commit(batch)
        # Anything still queued after close() raced with it; fail it rather than hang it.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item.future.set_exception(AppenderClosed("the ledger appender is closed"))

    def _commit(self, batch: list[_Item]) -> None:
        # Optimistically, the whole batch in one transaction; pieces rarely fail (a lost race
        # for an idempotency key, a refusal, a bug), and then the batch runs again with a
        # savepoint per piece so that only the failing piece is refused. Works are pure
        # functions of their inputs, so running one twice is safe (the first run was rolled
        # back). A piece alone in its batch needs no second run: its own error is its answer.
        try:
            outcomes = self._attempt(batch, isolate=False)
        except _PieceFailed as failed:
            if len(batch) == 1:
                outcomes = [(batch[0], None, failed.error)]
            else:
                try:
                    outcomes = self._attempt(batch, isolate=True)
                except Exception as exc:
                    outcomes = [(item, None, exc) for item in batch]
        except Exception as exc:
            outcomes = [(item, None, exc) for item in batch]
        for item, result, error in outcomes:
            if error is None:
                item.future.set_result(result)
            else:
                item.future.set_exception(error)

    def _attempt(
        self, batch: list[_Item], *, isolate: bool
    ) -> list[tuple[_Item, Any, BaseException | None]]:
        """Run the batch in one transaction. Optimistically (not `isolate`), an error from a
        piece's work, or from writing a batch of several, raises `_PieceFailed`; isolated,
        each piece's work and writes are refused alone under a savepoint. Only a failure of
        the batch itself (the chain lock, its final writes, the commit) is logged."""
        outcomes: list[tuple[_Item, Any, BaseException | None]] = []
        with self.sessions() as session:
            try:
                head = ChainHead(session, clock=self.clock)
                for item in batch:
                    if not isolate:
                        try:
                            result = item.work(session, head)
                        except Exception as exc:
                            raise _PieceFailed(exc) from exc
                        outcomes.append((item, result, None))
                        continue
                    mark = head.mark()
                    try:
                        with session.begin_nested():
                            result = item.work(session, head)
                            head.flush()
                    except Exception as exc:
                        head.reset(mark)
                        outcomes.append((item, None, exc))
                    else:
                        outcomes.append((item, result, None))
                head.flush()
                session.commit()
            except _PieceFailed:
                session.rollback()
                raise
            except Exception as exc:
                session.rollback()
                if not isolate and len(batch) > 1:
                    raise _PieceFailed(exc) from exc
                log.exception("ledger.batch_failed", size=len(batch), isolated=isolate)
                raise
        return outcomes


def run_alone(sessions: sessionmaker[Session], work: Work[T], *, clock: Clock = system_clock) -> T:
    """Run one piece of ledger work in a chain-locked transaction of its own and commit it.

    For processes without an appender (a worker's scheduled job, a command): they append
    rarely, so group commit would buy nothing.
    """
    with sessions() as session:
        head = ChainHead(session, clock=clock)
        result = work(session, head)
        head.flush()
        session.commit()
    return result


class _PieceFailed(Exception):
    """A piece of an optimistic batch failed; retry the batch piece by piece."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error
