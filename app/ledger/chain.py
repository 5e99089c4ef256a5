"""The ledger's hash chain: a canonical byte form of each transaction and its link hash.

    hash = sha256(prev_hash || canonical body of the transaction and its postings)

The first transaction links to GENESIS. Any change to a stored transaction or posting changes
its recomputed hash and breaks the link to every later transaction.

The fields added after the first transactions were written (who acted, what a transaction
answers, the dispute, the closed month it adjusts) enter the canonical form only when set, so
every transaction written before them keeps its hash and still verifies.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from dataclasses import dataclass

GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class PostingBody:
    account_id: uuid.UUID
    amount_micros: int
    use_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class TransactionBody:
    id: int
    kind: str
    created_at: dt.datetime
    currency: str
    postings: tuple[PostingBody, ...]
    check_id: uuid.UUID | None = None
    reverses_id: int | None = None
    reason: str | None = None
    actor_id: uuid.UUID | None = None
    answers_id: int | None = None
    dispute_id: uuid.UUID | None = None
    adjusts_period: dt.date | None = None


def canonical(body: TransactionBody) -> bytes:
    """Deterministic JSON: sorted keys, no spaces, UTC microsecond timestamps."""
    created = body.created_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    document: dict[str, object] = {
        "id": body.id,
        "kind": body.kind,
        "created_at": created,
        "currency": body.currency,
        "check_id": str(body.check_id) if body.check_id else None,
        "reverses_id": body.reverses_id,
        "reason": body.reason,
        "postings": [
            [str(p.account_id), p.amount_micros, str(p.use_id) if p.use_id else None]
            for p in body.postings
        ],
    }
    # Later fields: present only when set (see the module docstring).
    if body.actor_id is not None:
        document["actor_id"] = str(body.actor_id)
    if body.answers_id is not None:
        document["answers_id"] = body.answers_id
    if body.dispute_id is not None:
        document["dispute_id"] = str(body.dispute_id)
    if body.adjusts_period is not None:
        document["adjusts_period"] = body.adjusts_period.strftime("%Y-%m")
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def link(prev_hash: str, body: TransactionBody) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + canonical(body)).hexdigest()
