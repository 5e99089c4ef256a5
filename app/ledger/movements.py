"""Money movements: the only way postings are built.

Each verb appends one balanced transaction of its kind to the hash chain, inside the ledger
appender (under the chain lock, see `ChainHead`), with the organisation that caused it (the
actor; None for the service's own schedule), a reason, and a reference to what it answers.
Callers say who pays and who is paid; the verb derives the postings, so a movement balances by
construction:

* `charge`: the payer is debited what the credits and the fee add up to;
* `reverse`: the opposite of what is left of an earlier charge, once;
* `hold`: money moves from an account into a held account, pending a decision (the first
  phase of a two-phase transfer, like TigerBeetle's pending transfers);
* `release`: the held money goes back to the one who paid it (the pending transfer is voided);
* `uphold`: the held money goes to the one who claimed it (the pending transfer is posted).

A hold is posted once: the database refuses a second release or uphold of the same hold. Every
movement about a transaction dated in a closed month carries that month (`adjusts_period`),
so statements show it as an adjustment line of the open month that names the original.

Accounts are resolved beforehand (`service.account_id`, in a short transaction of its own), so
the chain lock is never held for those lookups.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.errors import Conflict
from app.ledger import periods
from app.ledger import service as ledger
from app.ledger.chain import PostingBody
from app.ledger.models import LedgerTransaction, TransactionKind
from app.ledger.service import ChainHead, LedgerError


@dataclass(frozen=True, slots=True)
class Credit:
    """An amount paid into an account, optionally for one use."""

    account_id: uuid.UUID
    amount_micros: int
    use_id: uuid.UUID | None = None


def charge(
    session: Session,
    head: ChainHead,
    *,
    payer: uuid.UUID,
    credits: Sequence[Credit],
    currency: str,
    check_id: uuid.UUID | None = None,
    tx_id: int | None = None,
    actor_id: uuid.UUID | None = None,
) -> LedgerTransaction:
    """Debit `payer` the sum of `credits` and credit each (credits of zero are left out).

    tx_id : an id taken earlier from `head.next_id()`, so rows written before the
        transaction (the uses it pays for) can refer to it
    """
    paid = [c for c in credits if c.amount_micros != 0]
    if any(c.amount_micros < 0 for c in paid):
        raise LedgerError("a charge credits positive amounts only")
    total = sum(c.amount_micros for c in paid)
    if total <= 0:
        raise LedgerError("a charge must move a positive amount")
    postings = [PostingBody(payer, -total)]
    postings += [PostingBody(c.account_id, c.amount_micros, c.use_id) for c in paid]
    return ledger.append(
        session,
        head,
        kind=TransactionKind.CHARGE,
        currency=currency,
        postings=postings,
        check_id=check_id,
        tx_id=tx_id,
        actor_id=actor_id,
    )


def reverse(
    session: Session,
    head: ChainHead,
    *,
    original: LedgerTransaction,
    reason: str,
    actor_id: uuid.UUID | None = None,
) -> LedgerTransaction:
    """Append the opposite of what is left of `original`: its postings and those of every
    hold, release and uphold that followed it, netted per account and use. Without disputes
    this is the exact opposite of `original`; a use whose dispute was released is left out
    (its money already went back). A transaction is reversed at most once.

    Raises Conflict naming the earlier reversal when there is one, and while part of the
    money sits in a held account (a decision is pending).
    """
    head.flush()  # this batch's own appends are read too
    already = ledger.reversal_of(session, [original.id]).get(original.id)
    if already is not None:
        raise Conflict(
            f"this check's charge was already reversed by transaction {already}",
            details={"reversal_transaction_id": already},
        )
    family = ledger.postings_of(session, ledger.family_of(session, original.id))
    # Accounts the original paid per use (labels) stay per use; the others (the payer, the
    # fee) net to one posting each, whatever use a refund to them named.
    per_use = {p.account_id for p in family[original.id] if p.use_id is not None}
    everything = [p for postings in family.values() for p in postings]
    held = ledger.held_accounts(session, (p.account_id for p in everything))
    still_held: dict[uuid.UUID | None, int] = {}
    for p in everything:
        if p.account_id in held:
            still_held[p.use_id] = still_held.get(p.use_id, 0) + p.amount_micros
    if any(still_held.values()):
        raise Conflict(
            "part of this charge is held pending a decision (a dispute or an ownership "
            "conflict); decide it first",
            details={"held_use_ids": sorted(str(u) for u, n in still_held.items() if n)},
        )
    net: dict[tuple[uuid.UUID, uuid.UUID | None], int] = {}
    for p in everything:
        key = (p.account_id, p.use_id if p.account_id in per_use else None)
        net[key] = net.get(key, 0) + p.amount_micros
    postings = [
        PostingBody(account, -amount, use) for (account, use), amount in net.items() if amount
    ]
    if len(postings) < 2:
        raise Conflict("nothing of this charge is left to reverse")
    return ledger.append(
        session,
        head,
        kind=TransactionKind.REVERSAL,
        currency=original.currency,
        postings=postings,
        check_id=original.check_id,
        reverses_id=original.id,
        reason=reason,
        actor_id=actor_id,
        adjusts_period=periods.closed_month_of(session, original.created_at),
    )


def hold(
    session: Session,
    head: ChainHead,
    *,
    original: LedgerTransaction,
    source: uuid.UUID,
    held: uuid.UUID,
    amount_micros: int,
    use_id: uuid.UUID | None,
    reason: str,
    actor_id: uuid.UUID | None,
    dispute_id: uuid.UUID | None = None,
    tx_id: int | None = None,
) -> LedgerTransaction:
    """Move `amount_micros` from `source` into the held account `held`, pending a decision
    (`release` or `uphold`). `original` is what the hold is about: the charge that paid the
    money, or (an appeal) the uphold that paid it out.

    tx_id : an id taken earlier from `head.next_id()`, so rows written before the hold (the
        dispute it belongs to) can refer to it
    """
    if amount_micros <= 0:
        raise LedgerError(f"a hold moves a positive amount, got {amount_micros}")
    if not ledger.held_accounts(session, [held]):
        raise LedgerError(f"account {held} is not a held account")
    return ledger.append(
        session,
        head,
        kind=TransactionKind.HOLD,
        currency=original.currency,
        postings=[
            PostingBody(source, -amount_micros, use_id),
            PostingBody(held, amount_micros, use_id),
        ],
        check_id=original.check_id,
        reason=reason,
        actor_id=actor_id,
        answers_id=original.id,
        dispute_id=dispute_id,
        adjusts_period=_adjusts(session, original),
        tx_id=tx_id,
    )


def release(
    session: Session,
    head: ChainHead,
    *,
    pending: LedgerTransaction,
    to: uuid.UUID,
    reason: str,
    actor_id: uuid.UUID | None,
    dispute_id: uuid.UUID | None = None,
) -> LedgerTransaction:
    """Pay what `pending` put into held accounts back to `to`, the one who paid it."""
    return _post(
        session,
        head,
        TransactionKind.RELEASE,
        pending=pending,
        to=to,
        reason=reason,
        actor_id=actor_id,
        dispute_id=dispute_id,
    )


def uphold(
    session: Session,
    head: ChainHead,
    *,
    pending: LedgerTransaction,
    to: uuid.UUID,
    reason: str,
    actor_id: uuid.UUID | None,
    dispute_id: uuid.UUID | None = None,
) -> LedgerTransaction:
    """Pay what `pending` put into held accounts to `to`, the one who claimed it."""
    return _post(
        session,
        head,
        TransactionKind.UPHOLD,
        pending=pending,
        to=to,
        reason=reason,
        actor_id=actor_id,
        dispute_id=dispute_id,
    )


def _post(
    session: Session,
    head: ChainHead,
    kind: TransactionKind,
    *,
    pending: LedgerTransaction,
    to: uuid.UUID,
    reason: str,
    actor_id: uuid.UUID | None,
    dispute_id: uuid.UUID | None,
) -> LedgerTransaction:
    """Move every amount `pending` credited to a held account out of it, to `to`, per use."""
    head.flush()  # a decision earlier in this batch is seen
    already = ledger.resolution_of(session, pending.id)
    if already is not None:
        raise Conflict(
            f"the hold {pending.id} was already decided by transaction {already}",
            details={"transaction_id": already},
        )
    postings = ledger.postings_of(session, [pending.id])[pending.id]
    held = ledger.held_accounts(session, (p.account_id for p in postings))
    parts = [p for p in postings if p.account_id in held and p.amount_micros > 0]
    if not parts:
        raise LedgerError(f"transaction {pending.id} holds nothing")
    moved: list[PostingBody] = []
    for p in parts:
        moved += [
            PostingBody(p.account_id, -p.amount_micros, p.use_id),
            PostingBody(to, p.amount_micros, p.use_id),
        ]
    return ledger.append(
        session,
        head,
        kind=kind,
        currency=pending.currency,
        postings=moved,
        check_id=pending.check_id,
        reason=reason,
        actor_id=actor_id,
        answers_id=pending.id,
        dispute_id=dispute_id,
        adjusts_period=_adjusts(session, pending),
    )


def _adjusts(session: Session, answered: LedgerTransaction) -> dt.date | None:
    """The closed month a movement about `answered` corrects: that of the charge its chain of
    answers starts from, if that month is closed."""
    return periods.closed_month_of(session, ledger.root_of(session, answered).created_at)
