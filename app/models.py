"""Every ORM model, imported in one place so the metadata is complete (Alembic, tests)."""

from app.catalogues.models import Catalogue, LicenseTerms, Segment, Track, TrackExclusion
from app.checks.models import Check, IdempotencyKey, Use
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
    "Dispute",
    "DisputeEvent",
    "IdempotencyKey",
    "LedgerAccount",
    "LedgerPeriod",
    "LedgerPosting",
    "LedgerTransaction",
    "LicenseTerms",
    "Organisation",
    "Segment",
    "Track",
    "TrackExclusion",
    "Use",
]
