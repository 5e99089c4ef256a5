"""Ledger operations: accounts, appending chained transactions, balances, verification."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.clock import Clock, system_clock
from app.db import utcnow
from app.ledger import chain
from app.ledger.chain import PostingBody, TransactionBody
from app.ledger.models import (
    RESOLUTIONS,
    AccountKind,
    LedgerAccount,
    LedgerPosting,
    LedgerTransaction,
    TransactionKind,
)
from app.orgs.models import Organisation

# Appends to the chain hold this transaction-scoped advisory lock until they commit, so two
# appenders never link to the same predecessor.
CHAIN_LOCK = 0x45_4C_4C_47  # "ELLG"


class LedgerError(ValueError):
    """A transaction that cannot be recorded (unbalanced, empty, wrong sign)."""


def find_account(
    session: Session, org_id: uuid.UUID | None, currency: str, *, held: bool = False
) -> uuid.UUID | None:
    """The organisation's account in `currency`, if it has one; org_id None is the platform's.
    With `held`, its held account instead (org_id None: the platform's escrow)."""
    kind = LedgerAccount.kind
    return session.scalar(
        sa.select(LedgerAccount.id).where(
            LedgerAccount.currency == currency,
            LedgerAccount.org_id.is_(None) if org_id is None else LedgerAccount.org_id == org_id,
            kind == AccountKind.HELD.value if held else kind != AccountKind.HELD.value,
        )
    )


def account_id(
    session: Session, *, org_id: uuid.UUID | None, kind: AccountKind, currency: str
) -> uuid.UUID:
    """The organisation's account of this kind (created on first use); org_id None is the
    platform's (kind PLATFORM) or its escrow (kind HELD)."""
    held = kind is AccountKind.HELD
    found = find_account(session, org_id, currency, held=held)
    if found is not None:
        return found
    session.execute(
        insert(LedgerAccount)
        .values(id=uuid.uuid4(), org_id=org_id, kind=kind.value, currency=currency)
        .on_conflict_do_nothing()
    )
    created = find_account(session, org_id, currency, held=held)
    assert created is not None
    return created


class ChainHead:
    """The end of the hash chain inside one database transaction that holds CHAIN_LOCK.

    Appends are buffered and written by `flush` in two statements whatever their number, so
    the time spent holding the lock does not grow with round trips per transaction. Flush
    before reading the ledger and before committing (the appender does both). `mark` and
    `reset` undo appends made inside a savepoint that rolled back.

    `now()` dates what is appended; whatever else the work under the lock records about the
    same moment (a dispute's step, a period's closing) reads the same clock.
    """

    def __init__(self, session: Session, *, clock: Clock = system_clock) -> None:
        session.execute(sa.select(sa.func.pg_advisory_xact_lock(CHAIN_LOCK)))
        last = session.scalar(
            sa.select(LedgerTransaction.hash).order_by(LedgerTransaction.id.desc()).limit(1)
        )
        self.hash = last or chain.GENESIS
        self.now = clock
        self._session = session
        self._ids: list[int] = []
        self._transactions: list[TransactionBody] = []
        self._links: list[tuple[str, str]] = []  # (prev_hash, hash) of each buffered one

    def mark(self) -> tuple[str, int]:
        return self.hash, len(self._transactions)

    def reset(self, mark: tuple[str, int]) -> None:
        self.hash, pending = mark
        del self._transactions[pending:]
        del self._links[pending:]

    def next_id(self) -> int:
        """A fresh transaction id. Under the chain lock ids grow in chain order; they are
        taken from the sequence in blocks to spare a round trip per transaction (an unused
        id leaves a gap, which the chain does not mind)."""
        if not self._ids:
            self._ids = list(
                self._session.scalars(
                    sa.text(
                        "SELECT nextval('ledger_transactions_id_seq') FROM generate_series(1, 64)"
                    )
                )
            )
        return self._ids.pop(0)

    def push(self, body: TransactionBody) -> str:
        """Link a transaction to the chain (written at the next flush); returns its hash."""
        digest = chain.link(self.hash, body)
        self._transactions.append(body)
        self._links.append((self.hash, digest))
        self.hash = digest
        return digest

    def flush(self) -> None:
        """Write the buffered transactions and their postings."""
        if not self._transactions:
            return
        bodies, links = self._transactions, self._links
        session = self._session
        session.execute(
            _INSERT_TRANSACTIONS,
            {
                "ids": [b.id for b in bodies],
                "kinds": [b.kind for b in bodies],
                "check_ids": [b.check_id for b in bodies],
                "reverses_ids": [b.reverses_id for b in bodies],
                "reasons": [b.reason for b in bodies],
                "currencies": [b.currency for b in bodies],
                "created_ats": [b.created_at for b in bodies],
                "prev_hashes": [prev for prev, _ in links],
                "hashes": [digest for _, digest in links],
                "actor_ids": [b.actor_id for b in bodies],
                "answers_ids": [b.answers_id for b in bodies],
                "dispute_ids": [b.dispute_id for b in bodies],
                "adjusts_periods": [b.adjusts_period for b in bodies],
            },
        )
        postings = [(b.id, p) for b in bodies for p in b.postings]
        session.execute(
            _INSERT_POSTINGS,
            {
                "transaction_ids": [tx_id for tx_id, _ in postings],
                "accounts": [p.account_id for _, p in postings],
                "amounts": [p.amount_micros for _, p in postings],
                "uses": [p.use_id for _, p in postings],
            },
        )
        self._transactions, self._links = [], []


_INSERT_TRANSACTIONS = sa.text(
    """
    INSERT INTO ledger_transactions
        (id, kind, check_id, reverses_id, reason, currency, created_at, prev_hash, hash,
         actor_id, answers_id, dispute_id, adjusts_period)
    SELECT * FROM unnest(
        CAST(:ids AS bigint[]), CAST(:kinds AS varchar[]), CAST(:check_ids AS uuid[]),
        CAST(:reverses_ids AS bigint[]), CAST(:reasons AS text[]), CAST(:currencies AS varchar[]),
        CAST(:created_ats AS timestamptz[]), CAST(:prev_hashes AS varchar[]),
        CAST(:hashes AS varchar[]), CAST(:actor_ids AS uuid[]), CAST(:answers_ids AS bigint[]),
        CAST(:dispute_ids AS uuid[]), CAST(:adjusts_periods AS date[])
    )
    """
)
# Ordered by position, so posting ids follow the order the chain hashed them in.
_INSERT_POSTINGS = sa.text(
    """
    INSERT INTO ledger_postings (transaction_id, account_id, amount_micros, use_id)
    SELECT p.transaction_id, p.account_id, p.amount_micros, p.use_id
    FROM unnest(CAST(:transaction_ids AS bigint[]), CAST(:accounts AS uuid[]),
                CAST(:amounts AS bigint[]), CAST(:uses AS uuid[]))
         WITH ORDINALITY AS p(transaction_id, account_id, amount_micros, use_id, n)
    ORDER BY p.n
    """
)


def append(
    session: Session,
    head: ChainHead,
    *,
    kind: TransactionKind,
    currency: str,
    postings: Sequence[PostingBody],
    check_id: uuid.UUID | None = None,
    reverses_id: int | None = None,
    reason: str | None = None,
    tx_id: int | None = None,
    actor_id: uuid.UUID | None = None,
    answers_id: int | None = None,
    dispute_id: uuid.UUID | None = None,
    adjusts_period: dt.date | None = None,
) -> LedgerTransaction:
    """Record one balanced transaction at the end of the chain (written at `head.flush()`),
    dated `head.now()`. Only the verbs in `app.ledger.movements` call this.

    tx_id : an id taken earlier from `head.next_id()` (so rows written before the
        transaction can refer to it); by default a new one
    """
    if len(postings) < 2:
        raise LedgerError(f"a transaction needs at least two postings, got {len(postings)}")
    if sum(p.amount_micros for p in postings) != 0:
        raise LedgerError(f"postings sum to {sum(p.amount_micros for p in postings)}, not 0")
    if any(p.amount_micros == 0 for p in postings):
        raise LedgerError("postings of zero are not recorded")
    body = TransactionBody(
        id=head.next_id() if tx_id is None else tx_id,
        kind=kind.value,
        created_at=head.now(),
        currency=currency,
        postings=tuple(postings),
        check_id=check_id,
        reverses_id=reverses_id,
        reason=reason,
        actor_id=actor_id,
        answers_id=answers_id,
        dispute_id=dispute_id,
        adjusts_period=adjusts_period,
    )
    prev_hash = head.hash
    digest = head.push(body)
    return LedgerTransaction(
        id=body.id,
        kind=body.kind,
        check_id=check_id,
        reverses_id=reverses_id,
        reason=reason,
        currency=currency,
        created_at=body.created_at,
        prev_hash=prev_hash,
        hash=digest,
        actor_id=actor_id,
        answers_id=answers_id,
        dispute_id=dispute_id,
        adjusts_period=adjusts_period,
    )


def postings_of(session: Session, transaction_ids: Sequence[int]) -> dict[int, list[LedgerPosting]]:
    """Postings of each transaction, in the order they were written."""
    found: dict[int, list[LedgerPosting]] = {t: [] for t in transaction_ids}
    if transaction_ids:
        stmt = (
            sa.select(LedgerPosting)
            .where(LedgerPosting.transaction_id.in_(transaction_ids))
            .order_by(LedgerPosting.id)
        )
        for posting in session.scalars(stmt):
            found[posting.transaction_id].append(posting)
    return found


def charge_of(session: Session, check_id: uuid.UUID) -> LedgerTransaction | None:
    """The transaction that charged for a check, if it charged anything."""
    return session.scalars(
        sa.select(LedgerTransaction).where(
            LedgerTransaction.check_id == check_id,
            LedgerTransaction.kind == TransactionKind.CHARGE.value,
        )
    ).one_or_none()


def reversal_of(session: Session, transaction_ids: Iterable[int]) -> dict[int, int]:
    """For transactions that were reversed: transaction id -> reversal id."""
    ids = list(set(transaction_ids))
    if not ids:
        return {}
    rows = session.execute(
        sa.select(LedgerTransaction.reverses_id, LedgerTransaction.id).where(
            LedgerTransaction.reverses_id.in_(ids)
        )
    )
    # reverses_id IN (...) is never NULL.
    return {cast(int, original): reversal for original, reversal in rows}


@dataclass(frozen=True, slots=True)
class TransactionFilter:
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    kind: TransactionKind | None = None
    check_id: uuid.UUID | None = None
    dispute_id: uuid.UUID | None = None


def transactions_query(f: TransactionFilter) -> sa.Select[LedgerTransaction]:
    """Ledger transactions matching the filter (unordered; the caller pages)."""
    stmt = sa.select(LedgerTransaction)
    if f.start is not None:
        stmt = stmt.where(LedgerTransaction.created_at >= f.start)
    if f.end is not None:
        stmt = stmt.where(LedgerTransaction.created_at < f.end)
    if f.kind is not None:
        stmt = stmt.where(LedgerTransaction.kind == f.kind.value)
    if f.check_id is not None:
        stmt = stmt.where(LedgerTransaction.check_id == f.check_id)
    if f.dispute_id is not None:
        stmt = stmt.where(LedgerTransaction.dispute_id == f.dispute_id)
    return stmt


@dataclass(frozen=True, slots=True)
class Balance:
    account_id: uuid.UUID | None
    currency: str
    balance_micros: int
    credits_micros: int
    debits_micros: int
    transactions: int
    held_micros: int = 0


def balance(session: Session, *, org_id: uuid.UUID, currency: str) -> Balance:
    """Sum of the postings on an organisation's account (zero before its first posting), and
    what sits in its held account pending decisions."""
    account = find_account(session, org_id, currency)
    held_account = find_account(session, org_id, currency, held=True)
    held = account_sum(session, held_account) if held_account is not None else 0
    if account is None:
        return Balance(None, currency, 0, 0, 0, 0, held)
    amount = LedgerPosting.amount_micros
    row = session.execute(
        sa.select(
            sa.func.coalesce(sa.func.sum(amount), 0),
            sa.func.coalesce(sa.func.sum(sa.case((amount > 0, amount), else_=0)), 0),
            sa.func.coalesce(sa.func.sum(sa.case((amount < 0, -amount), else_=0)), 0),
            sa.func.count(sa.distinct(LedgerPosting.transaction_id)),
        ).where(LedgerPosting.account_id == account)
    ).one()
    return Balance(account, currency, int(row[0]), int(row[1]), int(row[2]), int(row[3]), held)


def account_sum(session: Session, account: uuid.UUID, *, before: dt.datetime | None = None) -> int:
    """Sum of an account's postings, of transactions dated before `before` if given."""
    stmt = sa.select(sa.func.coalesce(sa.func.sum(LedgerPosting.amount_micros), 0)).where(
        LedgerPosting.account_id == account
    )
    if before is not None:
        stmt = stmt.join(
            LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id
        ).where(LedgerTransaction.created_at < before)
    return int(session.scalar(stmt) or 0)


def get_transaction(session: Session, transaction_id: int) -> LedgerTransaction | None:
    return session.get(LedgerTransaction, transaction_id)


def resolution_of(session: Session, pending_id: int) -> int | None:
    """The release or uphold that posted a pending hold, if one did."""
    return session.scalar(
        sa.select(LedgerTransaction.id).where(
            LedgerTransaction.answers_id == pending_id,
            LedgerTransaction.kind.in_([k.value for k in RESOLUTIONS]),
        )
    )


def root_of(session: Session, transaction: LedgerTransaction) -> LedgerTransaction:
    """The transaction a chain of answers starts from (a hold answers a charge, a release
    the hold, an appeal's hold the uphold...): the first one that answers nothing."""
    while transaction.answers_id is not None:
        parent = session.get(LedgerTransaction, transaction.answers_id)
        assert parent is not None  # a foreign key
        transaction = parent
    return transaction


def family_of(session: Session, root_id: int) -> list[int]:
    """`root_id` and every transaction that answers it, directly or through others."""
    ids, frontier = [root_id], [root_id]
    while frontier:
        frontier = list(
            session.scalars(
                sa.select(LedgerTransaction.id)
                .where(LedgerTransaction.answers_id.in_(frontier))
                .order_by(LedgerTransaction.id)
            )
        )
        ids += frontier
    return ids


def held_accounts(session: Session, account_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these accounts are held accounts."""
    ids = list(set(account_ids))
    if not ids:
        return set()
    return set(
        session.scalars(
            sa.select(LedgerAccount.id).where(
                LedgerAccount.id.in_(ids), LedgerAccount.kind == AccountKind.HELD.value
            )
        )
    )


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    transactions_checked: int
    last_hash: str
    first_broken_transaction_id: int | None = None
    problem: str | None = None


def verify(session: Session, *, batch: int = 2000) -> Verification:
    """Walk the whole chain in order, recomputing every hash; stop at the first broken link."""
    previous = chain.GENESIS
    checked = 0
    for transaction, postings in _walk(session, batch):
        if transaction.prev_hash != previous:
            return Verification(
                False, checked, previous, transaction.id,
                f"prev_hash {transaction.prev_hash[:12]}… does not match the hash of the "
                f"transaction before it ({previous[:12]}…)",
            )  # fmt: skip
        body = TransactionBody(
            id=transaction.id,
            kind=transaction.kind,
            created_at=transaction.created_at,
            currency=transaction.currency,
            postings=tuple(PostingBody(p.account_id, p.amount_micros, p.use_id) for p in postings),
            check_id=transaction.check_id,
            reverses_id=transaction.reverses_id,
            reason=transaction.reason,
            actor_id=transaction.actor_id,
            answers_id=transaction.answers_id,
            dispute_id=transaction.dispute_id,
            adjusts_period=transaction.adjusts_period,
        )
        if chain.link(previous, body) != transaction.hash:
            return Verification(
                False, checked, previous, transaction.id,
                "stored hash does not match the transaction's content: it or its postings "
                "were changed after they were written",
            )  # fmt: skip
        if sum(p.amount_micros for p in postings) != 0:
            return Verification(
                False, checked, previous, transaction.id, "postings do not sum to zero"
            )
        previous = transaction.hash
        checked += 1
    return Verification(True, checked, previous)


def _walk(session: Session, batch: int) -> Iterator[tuple[LedgerTransaction, list[LedgerPosting]]]:
    after = 0
    while True:
        page = list(
            session.scalars(
                sa.select(LedgerTransaction)
                .where(LedgerTransaction.id > after)
                .order_by(LedgerTransaction.id)
                .limit(batch)
            )
        )
        if not page:
            return
        postings = postings_of(session, [t.id for t in page])
        for transaction in page:
            yield transaction, postings[transaction.id]
        after = page[-1].id


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The chain's head at one moment: what an auditor keeps outside the database."""

    transactions: int
    head_id: int | None
    head_hash: str
    created_at: dt.datetime

    def message(self, key_id: str) -> bytes:
        """The bytes that are signed (documented in the API, so auditors can check offline)."""
        created = self.created_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        head = "" if self.head_id is None else str(self.head_id)
        return (
            f"echoledger-checkpoint\n{key_id}\n{self.transactions}\n{head}\n{self.head_hash}\n"
            f"{created}"
        ).encode()


def checkpoint(session: Session) -> Checkpoint:
    """The chain's current head and length (committed transactions only)."""
    head = session.execute(
        sa.select(LedgerTransaction.id, LedgerTransaction.hash)
        .order_by(LedgerTransaction.id.desc())
        .limit(1)
    ).one_or_none()
    count = session.scalar(sa.select(sa.func.count()).select_from(LedgerTransaction)) or 0
    if head is None:
        return Checkpoint(0, None, chain.GENESIS, utcnow())
    return Checkpoint(int(count), int(head[0]), str(head[1]), utcnow())


def verify_from(session: Session, kept: Checkpoint) -> Verification:
    """Verify the chain, then that it still reaches the head an auditor kept: its newest
    transactions cannot have been removed (which the chain alone cannot show, as the rest
    still links up)."""
    walked = verify(session)
    if not walked.ok or kept.head_id is None:
        return walked
    stored = session.scalar(
        sa.select(LedgerTransaction.hash).where(LedgerTransaction.id == kept.head_id)
    )
    problem = None
    if stored is None:
        problem = (
            f"transaction {kept.head_id}, the head of the checkpoint, is missing: transactions "
            "were removed from the ledger"
        )
    elif stored != kept.head_hash:
        problem = f"transaction {kept.head_id} no longer has the hash the checkpoint recorded"
    else:
        upto = session.scalar(
            sa.select(sa.func.count()).where(LedgerTransaction.id <= kept.head_id)
        )
        if upto != kept.transactions:
            problem = (
                f"the checkpoint counted {kept.transactions} transactions up to its head, the "
                f"ledger now holds {upto}"
            )
    if problem is None:
        return walked
    return Verification(False, walked.transactions_checked, walked.last_hash, kept.head_id, problem)


def account_names(session: Session, account_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
    """A readable name per account: its organisation and kind ('Nordic Tapes (held)'), or the
    kind alone for the platform's own accounts."""
    ids = list(set(account_ids))
    if not ids:
        return {}
    rows = session.execute(
        sa.select(LedgerAccount.id, LedgerAccount.kind, Organisation.name)
        .outerjoin(Organisation, Organisation.id == LedgerAccount.org_id)
        .where(LedgerAccount.id.in_(ids))
    )
    return {r.id: f"{r.name} ({r.kind})" if r.name else f"platform ({r.kind})" for r in rows}
