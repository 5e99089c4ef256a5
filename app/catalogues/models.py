"""Catalogues, their versioned license terms, and their tracks."""

from __future__ import annotations

import datetime as dt
import enum
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, utcnow


class CatalogueStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class Catalogue(Base):
    __tablename__ = "catalogues"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    label_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("organisations.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class LicenseTerms(Base):
    """One version of a catalogue's license terms; a change adds a version, never edits one."""

    __tablename__ = "license_terms"
    __table_args__ = (
        sa.UniqueConstraint("catalogue_id", "version"),
        sa.CheckConstraint("version >= 1", name="version_positive"),
        sa.CheckConstraint("rate_per_use_micros >= 0", name="rate_not_negative"),
        sa.CheckConstraint("threshold >= 0 AND threshold <= 1", name="threshold_unit_interval"),
        sa.CheckConstraint(
            "valid_from IS NULL OR valid_to IS NULL OR valid_to > valid_from",
            name="validity_ordered",
        ),
        sa.CheckConstraint("status IN ('active', 'suspended')", name="status_known"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    catalogue_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("catalogues.id"))
    version: Mapped[int]
    rate_per_use_micros: Mapped[int] = mapped_column(sa.BigInteger)
    threshold: Mapped[float] = mapped_column(sa.Double)
    valid_from: Mapped[dt.datetime | None]
    valid_to: Mapped[dt.datetime | None]
    status: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    def in_force(self, at: dt.datetime) -> bool:
        """True when these terms let the catalogue match at time `at`."""
        return (
            self.status == CatalogueStatus.ACTIVE
            and (self.valid_from is None or self.valid_from <= at)
            and (self.valid_to is None or at < self.valid_to)
        )
