"""Ledger throughput: chained transactions per second with concurrent writers.

    python -m bench.ledger                       # DATABASE_URL's server, or embedded PostgreSQL
    python -m bench.ledger --writers 32 --transactions 4000 --json ledger.json

Each transaction is what a paid check writes to the ledger: an AI company debited, three
labels credited, hash-chained to its predecessor under the chain lock, balance checked by the
database at commit. As in a check (app.checks.service.resolve_accounts), the account ids are
looked up before the chain lock is taken. Three setups are measured:

* `group commit`: W threads share one LedgerAppender (one API process);
* `two appenders`: W threads split over two appenders contending for the chain lock (two API
  processes on one database);
* `one commit each`: the same appends, each in its own transaction (no group commit), to
  show what the appender buys.

The bar is 1,000 transactions per second. The chain is verified once, after all setups.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app.db import create_db_engine, make_sessionmaker, transaction
from app.ledger import service as ledger
from app.ledger.appender import LedgerAppender
from app.ledger.chain import PostingBody
from app.ledger.models import AccountKind, TransactionKind
from app.ledger.service import ChainHead
from app.orgs.models import Organisation
from bench import metrics
from bench._db import scratch_database

BAR = 1000.0


def _accounts(sessions: sessionmaker[Session]) -> list[uuid.UUID]:
    with transaction(sessions) as session:
        ids = []
        for kind in (
            AccountKind.AI_COMPANY,
            AccountKind.LABEL,
            AccountKind.LABEL,
            AccountKind.LABEL,
        ):
            org = Organisation(kind=kind.value, name=f"bench-{kind.value}")
            session.add(org)
            session.flush()
            ids.append(ledger.account_id(session, org_id=org.id, kind=kind, currency="USD"))
    return ids


def _work(accounts: list[uuid.UUID], amount: int) -> Callable[[Session, ChainHead], int]:
    payer, *labels = accounts
    parts = [amount // 3, amount // 3, amount - 2 * (amount // 3)]

    def work(session: Session, head: ChainHead) -> int:
        postings = [PostingBody(payer, -amount)]
        postings += [PostingBody(label, part) for label, part in zip(labels, parts, strict=True)]
        tx = ledger.append(
            session, head, kind=TransactionKind.CHARGE, currency="USD", postings=postings
        )
        return tx.id

    return work


def _run(
    name: str, submit: Callable[[int], Any], *, writers: int, transactions: int
) -> dict[str, Any]:
    latencies: list[float] = []

    def one(i: int) -> None:
        started = time.perf_counter()
        submit(i)
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=writers) as pool:
        list(pool.map(one, range(transactions)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "setup": name,
        "writers": writers,
        "transactions": transactions,
        "seconds": round(elapsed, 2),
        "tx_per_s": round(transactions / elapsed, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 2),
        "p95_ms": round(1000 * metrics.quantile(latencies, 0.95), 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=32)
    parser.add_argument("--transactions", type=int, default=4000)
    parser.add_argument("--json", type=str, default=None, help="also write results here")
    args = parser.parse_args(argv)

    results = []
    with scratch_database("bench_ledger") as url:
        engine = create_db_engine(url, pool_size=args.writers + 4)
        sessions = make_sessionmaker(engine)
        accounts = _accounts(sessions)
        work = _work

        appender = LedgerAppender(sessions)
        results.append(
            _run("group commit", lambda i: appender.run(work(accounts, 1000 + i)),
                 writers=args.writers, transactions=args.transactions)
        )  # fmt: skip
        appender.close()

        pair = [LedgerAppender(sessions), LedgerAppender(sessions)]
        results.append(
            _run("two appenders", lambda i: pair[i % 2].run(work(accounts, 1000 + i)),
                 writers=args.writers, transactions=args.transactions)
        )  # fmt: skip
        for a in pair:
            a.close()

        def alone(i: int) -> None:
            with transaction(sessions) as session:
                head = ChainHead(session)
                work(accounts, 1000 + i)(session, head)
                head.flush()

        results.append(
            _run("one commit each", alone, writers=args.writers,
                 transactions=max(200, args.transactions // 10))
        )  # fmt: skip

        with sessions() as session:
            started = time.perf_counter()
            verified = ledger.verify(session)
            verify_s = time.perf_counter() - started
            unbalanced = session.scalar(
                sa.text(
                    "SELECT count(*) FROM (SELECT transaction_id FROM ledger_postings "
                    "GROUP BY transaction_id HAVING sum(amount_micros) <> 0) x"
                )
            )
        engine.dispose()

    print(f"{'setup':<18}{'writers':>8}{'tx':>7}{'tx/s':>9}{'p50 ms':>9}{'p95 ms':>9}")
    for r in results:
        print(
            f"{r['setup']:<18}{r['writers']:>8}{r['transactions']:>7}{r['tx_per_s']:>9}"
            f"{r['p50_ms']:>9}{r['p95_ms']:>9}"
        )
    print(
        f"chain verified: {verified.ok} ({verified.transactions_checked} transactions in "
        f"{verify_s:.2f} s, {verified.transactions_checked / verify_s:.0f}/s); "
        f"unbalanced transactions: {unbalanced}"
    )
    best = results[0]["tx_per_s"]
    print(f"bar: >= {BAR:.0f} tx/s with group commit -> {'met' if best >= BAR else 'MISSED'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "verify_seconds": verify_s, "bar": BAR}, f, indent=2)
    return 0 if verified.ok and not unbalanced else 1


if __name__ == "__main__":
    sys.exit(main())
