"""The ledger: append-only tables, balanced transactions, the hash chain, reversals."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.exc
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from app.db import make_sessionmaker
from app.ledger import service as ledger
from app.ledger.appender import LedgerAppender
from app.ledger.chain import PostingBody
from app.ledger.models import AccountKind, TransactionKind
from app.ledger.service import ChainHead, LedgerError
from app.orgs.models import Organisation
from tests.factories import Tenants


@pytest.fixture
def accounts(engine: Engine) -> tuple[uuid.UUID, uuid.UUID]:
    """An AI company's and a label's accounts."""
    with make_sessionmaker(engine).begin() as session:
        ids = []
        for kind in (AccountKind.AI_COMPANY, AccountKind.LABEL):
            org = Organisation(kind=kind.value, name=kind.value)
            session.add(org)
            session.flush()
            ids.append(ledger.account_id(session, org_id=org.id, kind=kind, currency="USD"))
    return ids[0], ids[1]


@pytest.fixture
def appender(engine: Engine) -> Any:
    appender = LedgerAppender(make_sessionmaker(engine))
    yield appender
    appender.close()


def _charge(payer: uuid.UUID, payee: uuid.UUID, amount: int) -> Any:
    def work(session: Session, head: ChainHead) -> int:
        tx = ledger.append(
            session,
            head,
            kind=TransactionKind.CHARGE,
            currency="USD",
            postings=[PostingBody(payer, -amount), PostingBody(payee, amount)],
        )
        return tx.id

    return work


def test_appends_chain_and_verify(
    appender: LedgerAppender, accounts: tuple[uuid.UUID, uuid.UUID], engine: Engine
) -> None:
    ids = [appender.run(_charge(*accounts, amount)) for amount in (100, 250, 7)]
    assert ids == sorted(ids)
    with make_sessionmaker(engine)() as session:
        result = ledger.verify(session)
        rows = session.execute(
            sa.text("SELECT prev_hash, hash FROM ledger_transactions ORDER BY id")
        ).all()
    assert result.ok
    assert result.transactions_checked == 3
    assert rows[0].prev_hash == "0" * 64
    assert [r.prev_hash for r in rows[1:]] == [r.hash for r in rows[:-1]]


def test_concurrent_appenders_never_fork_the_chain(
    engine: Engine, accounts: tuple[uuid.UUID, uuid.UUID]
) -> None:
    sessions = make_sessionmaker(engine)
    # Two appenders stand for two API processes; each is fed by several threads.
    first, second = LedgerAppender(sessions), LedgerAppender(sessions)
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(
                pool.map(
                    lambda i: (first if i % 2 else second).run(_charge(*accounts, i + 1)),
                    range(200),
                )
            )
    finally:
        first.close()
        second.close()
    with sessions() as session:
        result = ledger.verify(session)
        heads = session.scalar(sa.text("SELECT count(DISTINCT prev_hash) FROM ledger_transactions"))
    assert result.ok
    assert result.transactions_checked == 200
    assert heads == 200  # every transaction has its own predecessor: no fork
    assert ledger.balance(
        sessions(), org_id=_org_of(engine, accounts[1]), currency="USD"
    ).balance_micros == sum(range(1, 201))


def _org_of(engine: Engine, account: uuid.UUID) -> uuid.UUID:
    with engine.connect() as conn:
        return conn.scalar(
            sa.text("SELECT org_id FROM ledger_accounts WHERE id = :a"), {"a": account}
        )


def _unbalanced(accounts: tuple[uuid.UUID, uuid.UUID], runs: list[int]) -> Any:
    def work(session: Session, head: ChainHead) -> None:
        runs.append(1)
        postings = [PostingBody(accounts[0], -5), PostingBody(accounts[1], 4)]
        ledger.append(session, head, kind=TransactionKind.CHARGE, currency="USD", postings=postings)

    return work


def _wait_for(condition: Any) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_a_failing_piece_rolls_back_alone(
    appender: LedgerAppender, accounts: tuple[uuid.UUID, uuid.UUID], engine: Engine
) -> None:
    busy, release = threading.Event(), threading.Event()

    def blocker(session: Session, head: ChainHead) -> None:
        busy.set()
        release.wait(timeout=10)

    def submit(work: Any) -> Any:
        try:
            return appender.run(work)
        except LedgerError as exc:
            return exc

    bad_runs: list[int] = []
    pieces = [_charge(*accounts, 10), _unbalanced(accounts, bad_runs), _charge(*accounts, 20)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        # Keep the appender busy with a batch of its own while the three pieces queue up in
        # order behind it, so that they are taken together as the next batch.
        blocked = pool.submit(appender.run, blocker)
        assert busy.wait(timeout=10)
        futures = []
        for n, piece in enumerate(pieces, start=1):
            futures.append(pool.submit(submit, piece))
            _wait_for(lambda n=n: appender._queue.qsize() == n)
        release.set()
        blocked.result()
        outcomes = [f.result() for f in futures]
    assert isinstance(outcomes[1], LedgerError)
    assert "sum to -1" in str(outcomes[1])
    assert isinstance(outcomes[0], int)
    assert isinstance(outcomes[2], int)
    assert len(bad_runs) == 2  # once in the optimistic batch, once alone under a savepoint
    with make_sessionmaker(engine)() as session:
        assert ledger.verify(session).transactions_checked == 2


def test_a_refused_piece_alone_in_its_batch_is_not_logged(
    appender: LedgerAppender,
    accounts: tuple[uuid.UUID, uuid.UUID],
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[int] = []
    with caplog.at_level(logging.INFO), pytest.raises(LedgerError, match="sum to -1"):
        appender.run(_unbalanced(accounts, runs))
    assert len(runs) == 1
    assert not any("ledger.batch_failed" in str(r.msg) for r in caplog.records)
    assert isinstance(appender.run(_charge(*accounts, 10)), int)


def test_the_database_refuses_unbalanced_transactions(
    engine: Engine, accounts: tuple[uuid.UUID, uuid.UUID]
) -> None:
    insert_transaction = sa.text(
        "INSERT INTO ledger_transactions (id, kind, currency, created_at, prev_hash, hash) "
        "VALUES (:id, 'charge', 'USD', now(), repeat('0', 64), repeat(:h, 64))"
    )
    insert_postings = sa.text(
        "INSERT INTO ledger_postings (transaction_id, account_id, amount_micros) "
        "VALUES (1, :a, -10), (1, :b, 9)"
    )

    def unbalanced() -> None:
        with engine.begin() as conn:
            conn.execute(insert_transaction, {"id": 1, "h": "a"})
            conn.execute(insert_postings, {"a": accounts[0], "b": accounts[1]})

    def without_postings() -> None:
        with engine.begin() as conn:
            conn.execute(insert_transaction, {"id": 2, "h": "b"})

    for attempt in (unbalanced, without_postings):
        with pytest.raises(sqlalchemy.exc.IntegrityError, match="does not balance"):
            attempt()


@pytest.mark.parametrize("table", ["ledger_transactions", "ledger_postings", "ledger_accounts"])
@pytest.mark.parametrize(
    "statement",
    ["UPDATE {t} SET created_at = created_at", "DELETE FROM {t}", "TRUNCATE {t} CASCADE"],
)
def test_ledger_tables_refuse_update_delete_and_truncate(
    appender: LedgerAppender,
    accounts: tuple[uuid.UUID, uuid.UUID],
    engine: Engine,
    table: str,
    statement: str,
) -> None:
    appender.run(_charge(*accounts, 10))
    sql = statement.format(t=table)
    if table == "ledger_postings" and sql.startswith("UPDATE"):
        sql = "UPDATE ledger_postings SET amount_micros = amount_micros"
    with pytest.raises(sqlalchemy.exc.DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.text(sql))


def test_verify_names_the_transaction_a_superuser_tampered_with(
    client: TestClient,
    tenants: Tenants,
    appender: LedgerAppender,
    accounts: tuple[uuid.UUID, uuid.UUID],
    engine: Engine,
) -> None:
    ids = [appender.run(_charge(*accounts, amount)) for amount in (100, 200, 300, 400)]
    auditor = tenants.auditor()
    assert client.get("/v1/ledger/verify", headers=auditor.headers).json()["ok"] is True
    with engine.begin() as conn:
        # A superuser can switch the triggers off; the chain still tells.
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        conn.execute(
            sa.text(
                "UPDATE ledger_postings SET amount_micros = amount_micros * 2 "
                "WHERE transaction_id = :t"
            ),
            {"t": ids[2]},
        )
    report = client.get("/v1/ledger/verify", headers=auditor.headers).json()
    assert report["ok"] is False
    assert report["first_broken_transaction_id"] == ids[2]
    assert report["transactions_checked"] == 2
    assert "changed after they were written" in report["problem"]


def test_a_rewritten_hash_breaks_the_next_link(
    client: TestClient,
    tenants: Tenants,
    appender: LedgerAppender,
    accounts: tuple[uuid.UUID, uuid.UUID],
    engine: Engine,
) -> None:
    ids = [appender.run(_charge(*accounts, amount)) for amount in (1, 2, 3)]
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        conn.execute(
            sa.text("DELETE FROM ledger_postings WHERE transaction_id = :t"), {"t": ids[1]}
        )
        conn.execute(sa.text("DELETE FROM ledger_transactions WHERE id = :t"), {"t": ids[1]})
    report = client.get("/v1/ledger/verify", headers=tenants.auditor().headers).json()
    assert report["first_broken_transaction_id"] == ids[2]
    assert "prev_hash" in report["problem"]


def test_transactions_are_listed_with_postings_for_auditors(
    client: TestClient,
    tenants: Tenants,
    appender: LedgerAppender,
    accounts: tuple[uuid.UUID, uuid.UUID],
) -> None:
    ids = [appender.run(_charge(*accounts, amount)) for amount in (5, 6, 7)]
    auditor = tenants.auditor()
    page = client.get(
        "/v1/ledger/transactions", params={"limit": 2}, headers=auditor.headers
    ).json()
    assert [t["id"] for t in page["items"]] == [ids[2], ids[1]]
    assert sorted(p["amount_micros"] for p in page["items"][0]["postings"]) == [-7, 7]
    rest = client.get(
        "/v1/ledger/transactions", params={"cursor": page["next_cursor"]}, headers=auditor.headers
    ).json()
    assert [t["id"] for t in rest["items"]] == [ids[0]]
    assert client.get("/v1/ledger/transactions", headers=tenants.label().headers).status_code == 403


def test_fields_added_later_enter_the_hash_only_when_set() -> None:
    """Transactions written before actors and answers existed keep their hash."""
    import datetime as dt

    from app.ledger.chain import TransactionBody, canonical

    account = uuid.UUID(int=1)
    body = TransactionBody(
        id=7,
        kind="charge",
        created_at=dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC),
        currency="USD",
        postings=(PostingBody(account, -5), PostingBody(account, 5)),
    )
    assert canonical(body) == (
        b'{"check_id":null,"created_at":"2026-01-02T03:04:05.000006Z","currency":"USD",'
        b'"id":7,"kind":"charge","postings":[["00000000-0000-0000-0000-000000000001",-5,null],'
        b'["00000000-0000-0000-0000-000000000001",5,null]],"reason":null,"reverses_id":null}'
    )
    later = dataclasses.replace(
        body, actor_id=account, answers_id=3, adjusts_period=dt.date(2025, 12, 1)
    )
    assert b'"actor_id":"00000000-0000-0000-0000-000000000001"' in canonical(later)
    assert b'"adjusts_period":"2025-12"' in canonical(later)
    assert b'"answers_id":3' in canonical(later)


def test_verify_notices_a_rewritten_actor(
    client: TestClient,
    tenants: Tenants,
    appender: LedgerAppender,
    accounts: tuple[uuid.UUID, uuid.UUID],
    engine: Engine,
) -> None:
    actor = tenants.operator().id

    def charge(session: Session, head: ChainHead) -> int:
        postings = [PostingBody(accounts[0], -9), PostingBody(accounts[1], 9)]
        return ledger.append(
            session, head, kind=TransactionKind.CHARGE, currency="USD", postings=postings,
            actor_id=actor,
        ).id  # fmt: skip

    tx_id = appender.run(charge)
    auditor = tenants.auditor()
    assert client.get("/v1/ledger/verify", headers=auditor.headers).json()["ok"] is True
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        conn.execute(
            sa.text("UPDATE ledger_transactions SET actor_id = NULL WHERE id = :t"), {"t": tx_id}
        )
    report = client.get("/v1/ledger/verify", headers=auditor.headers).json()
    assert report["first_broken_transaction_id"] == tx_id


def test_a_kept_checkpoint_reveals_the_newest_transactions_deleted(
    client: TestClient,
    tenants: Tenants,
    appender: LedgerAppender,
    accounts: tuple[uuid.UUID, uuid.UUID],
    engine: Engine,
) -> None:
    ids = [appender.run(_charge(*accounts, amount)) for amount in (1, 2, 3, 4)]
    auditor = tenants.auditor()
    kept = client.get("/v1/ledger/checkpoint", headers=auditor.headers).json()
    assert (kept["transactions"], kept["head_id"], kept["algorithm"]) == (4, ids[-1], "ed25519")
    assert client.post("/v1/ledger/verify", json=kept, headers=auditor.headers).json()["ok"]
    appender.run(_charge(*accounts, 5))  # the ledger grows: the old checkpoint still holds
    assert client.post("/v1/ledger/verify", json=kept, headers=auditor.headers).json()["ok"]

    with engine.begin() as conn:
        # A superuser removes the two newest transactions; what is left still links up.
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        newest = "(SELECT id FROM ledger_transactions ORDER BY id DESC LIMIT 2)"
        conn.execute(sa.text(f"DELETE FROM ledger_postings WHERE transaction_id IN {newest}"))
        conn.execute(sa.text(f"DELETE FROM ledger_transactions WHERE id IN {newest}"))
    assert client.get("/v1/ledger/verify", headers=auditor.headers).json()["ok"] is True
    report = client.post("/v1/ledger/verify", json=kept, headers=auditor.headers).json()
    assert report["ok"] is False
    assert report["first_broken_transaction_id"] == ids[-1]
    assert "missing" in report["problem"]


def test_a_checkpoint_verifies_offline_and_a_forged_one_is_refused(
    client: TestClient,
    tenants: Tenants,
    appender: LedgerAppender,
    accounts: tuple[uuid.UUID, uuid.UUID],
) -> None:
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from app.ledger.service import Checkpoint

    appender.run(_charge(*accounts, 7))
    auditor = tenants.auditor()
    kept = client.get("/v1/ledger/checkpoint", headers=auditor.headers).json()
    # An auditor checks it with nothing but the public key and the documented message.
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(kept["public_key"]))
    message = Checkpoint(
        kept["transactions"],
        kept["head_id"],
        kept["head_hash"],
        dt.datetime.fromisoformat(kept["created_at"]),
    ).message(kept["key_id"])
    public.verify(base64.b64decode(kept["signature"]), message)  # raises if it does not verify

    forged = kept | {"transactions": kept["transactions"] + 1}
    refused = client.post("/v1/ledger/verify", json=forged, headers=auditor.headers)
    assert refused.status_code == 422
    assert refused.json()["error"]["details"][0]["field"] == "body.signature"


def test_the_signing_key_is_created_once_and_kept(tmp_path: Path) -> None:
    from app.signing import Signer

    path = tmp_path / "keys" / "ledger.key"
    first = Signer.from_file(path)
    again = Signer.from_file(path)
    assert first.public_key == again.public_key
    assert path.stat().st_mode & 0o777 == 0o600
    assert again.verify(b"m", first.sign(b"m"))
    assert not again.verify(b"other", first.sign(b"m"))
