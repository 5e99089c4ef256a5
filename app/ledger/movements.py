"""Money movements: the only way postings are built.

Each verb appends one balanced transaction of its kind to the hash chain, inside the ledger
appender (under the chain lock, see `ChainHead`). Callers say who pays and who is paid; the
verb derives the postings, so a movement balances by construction:

* `charge`: the payer is debited what the credits and the fee add up to;
* `reverse`: the exact opposite of an earlier transaction, once.

Accounts are resolved beforehand (`service.account_id`, in a short transaction of its own), so
the chain lock is never held for those lookups.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.errors import Conflict
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
    )


def reverse(
    session: Session, head: ChainHead, *, original: LedgerTransaction, reason: str
) -> LedgerTransaction:
    """Append the exact opposite of `original`; a transaction is reversed at most once.

    Raises Conflict naming the earlier reversal when there is one.
    """
    head.flush()  # this batch's own appends are read too
    already = ledger.reversal_of(session, [original.id]).get(original.id)
    if already is not None:
        raise Conflict(
            f"this check's charge was already reversed by transaction {already}",
            details={"reversal_transaction_id": already},
        )
    postings = ledger.postings_of(session, [original.id])[original.id]
    return ledger.append(
        session,
        head,
        kind=TransactionKind.REVERSAL,
        currency=original.currency,
        postings=[PostingBody(p.account_id, -p.amount_micros, p.use_id) for p in postings],
        check_id=original.check_id,
        reverses_id=original.id,
        reason=reason,
    )
