"""Resolving ownership conflicts as the API drives it.

`ConflictFlow` is built once per process by the app's lifespan around the process's one
ledger appender: resolution moves money, so it runs as ledger work (see
`app.conflicts.service`). The label accounts it may pay are looked up (created on first use)
in a short transaction before the chain lock is taken.
"""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session, sessionmaker

from app.catalogues.models import ConflictResolution
from app.conflicts import service as conflicts
from app.conflicts.service import Decision
from app.db import transaction
from app.ledger.appender import LedgerAppender


class ConflictFlow:
    """Withdraws claims and records operators' decisions; thread-safe (one per process)."""

    def __init__(self, *, sessions: sessionmaker[Session], appender: LedgerAppender) -> None:
        self.sessions = sessions
        self.appender = appender

    def withdraw_claim(self, conflict_id: uuid.UUID, *, label_id: uuid.UUID, reason: str) -> None:
        """The label gives up its claim: the other label wins."""
        self._resolve(
            conflict_id,
            Decision(
                actor_id=label_id,
                operator=False,
                resolution=ConflictResolution.CLAIM_WITHDRAWN,
                reason=reason,
            ),
        )

    def decide(
        self,
        conflict_id: uuid.UUID,
        *,
        operator_id: uuid.UUID,
        winner_label_id: uuid.UUID,
        reason: str,
    ) -> None:
        """An operator names the label that owns the recording."""
        self._resolve(
            conflict_id,
            Decision(
                actor_id=operator_id,
                operator=True,
                resolution=ConflictResolution.DECIDED,
                reason=reason,
                winner_label_id=winner_label_id,
            ),
        )

    def _resolve(self, conflict_id: uuid.UUID, decision: Decision) -> None:
        with transaction(self.sessions) as session:
            accounts = conflicts.payee_accounts(session, conflict_id)
        self.appender.run(
            lambda session, head: conflicts.resolve(
                session, head, conflict_id=conflict_id, decision=decision, accounts=accounts
            )
        )
