"""Every ORM model, imported in one place so the metadata is complete (Alembic, tests)."""

from app.catalogues.models import (
    Catalogue,
    LicenseTerms,
    OwnershipConflict,
    Segment,
    Track,
    TrackExclusion,
)
from app.checks.models import Check, IdempotencyKey, Use
from app.conflicts.models import ConflictHold
from app.db import Base
from app.disputes.models import Dispute, DisputeEvent
from app.ledger.models import LedgerAccount, LedgerPeriod, LedgerPosting, LedgerTransaction
from app.orgs.models import ApiKey, AuditEvent, Organisation

__all__ = [
    "ApiKey",
    "AuditEvent",
    "Base",
    "Catalogue",
    "Check",
    "ConflictHold",
    "Dispute",
    "DisputeEvent",
    "IdempotencyKey",
    "LedgerAccount",
    "LedgerPeriod",
    "LedgerPosting",
    "LedgerTransaction",
    "LicenseTerms",
    "Organisation",
    "OwnershipConflict",
    "Segment",
    "Track",
    "TrackExclusion",
    "Use",
]
