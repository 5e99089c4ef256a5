"""ownership conflicts and duplicates between tracks, and the money held for them

Revision ID: 0007_conflicts
Revises: 0006_rights
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007_conflicts"
down_revision: str | None = "0006_rights"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tracks", sa.Column("duplicate_of", sa.Uuid(), nullable=True))
    op.create_foreign_key(
        op.f("fk_tracks_duplicate_of_tracks"), "tracks", "tracks", ["duplicate_of"], ["id"]
    )
    op.create_table(
        "ownership_conflicts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("track_id", sa.Uuid(), nullable=False),
        sa.Column("label_id", sa.Uuid(), nullable=False),
        sa.Column("original_track_id", sa.Uuid(), nullable=False),
        sa.Column("original_label_id", sa.Uuid(), nullable=False),
        sa.Column("coverage", sa.Double(), nullable=False),
        sa.Column("resemblance", sa.Double(), nullable=False),
        sa.Column("tempo_ratio", sa.Double(), nullable=False),
        sa.Column("offset_s", sa.Double(), nullable=False),
        sa.Column("evidence", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolution", sa.String(length=16), nullable=True),
        sa.Column("winner_label_id", sa.Uuid(), nullable=True),
        sa.Column("resolved_by", sa.Uuid(), nullable=True),
        sa.Column("resolved_reason", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "track_id <> original_track_id", name=op.f("ck_ownership_conflicts_two_tracks")
        ),
        sa.CheckConstraint(
            "kind IN ('duplicate', 'conflict')", name=op.f("ck_ownership_conflicts_kind_known")
        ),
        sa.CheckConstraint(
            "status IN ('noted', 'open', 'resolved')",
            name=op.f("ck_ownership_conflicts_status_known"),
        ),
        sa.CheckConstraint(
            "(kind = 'duplicate') = (status = 'noted')",
            name=op.f("ck_ownership_conflicts_duplicates_are_noted"),
        ),
        sa.CheckConstraint(
            "(kind = 'duplicate') = (label_id = original_label_id)",
            name=op.f("ck_ownership_conflicts_duplicate_iff_same_label"),
        ),
        sa.CheckConstraint(
            "(status = 'resolved') = (resolved_at IS NOT NULL AND winner_label_id IS NOT NULL "
            "AND resolution IS NOT NULL)",
            name=op.f("ck_ownership_conflicts_resolved_fields"),
        ),
        sa.CheckConstraint(
            "resolution IS NULL OR resolution IN ('claim_withdrawn', 'decided')",
            name=op.f("ck_ownership_conflicts_resolution_known"),
        ),
        sa.ForeignKeyConstraint(
            ["track_id"], ["tracks.id"], name=op.f("fk_ownership_conflicts_track_id_tracks")
        ),
        sa.ForeignKeyConstraint(
            ["original_track_id"],
            ["tracks.id"],
            name=op.f("fk_ownership_conflicts_original_track_id_tracks"),
        ),
        sa.ForeignKeyConstraint(
            ["label_id"],
            ["organisations.id"],
            name=op.f("fk_ownership_conflicts_label_id_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["original_label_id"],
            ["organisations.id"],
            name=op.f("fk_ownership_conflicts_original_label_id_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["winner_label_id"],
            ["organisations.id"],
            name=op.f("fk_ownership_conflicts_winner_label_id_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["resolved_by"],
            ["organisations.id"],
            name=op.f("fk_ownership_conflicts_resolved_by_organisations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ownership_conflicts")),
        sa.UniqueConstraint(
            "track_id",
            "original_track_id",
            name=op.f("uq_ownership_conflicts_track_id_original_track_id"),
        ),
    )
    op.create_index(
        "ix_ownership_conflicts_original_track_id",
        "ownership_conflicts",
        ["original_track_id"],
    )
    op.create_index(
        "ix_ownership_conflicts_label_id_detected_at",
        "ownership_conflicts",
        ["label_id", "detected_at", "id"],
    )
    op.create_index(
        "ix_ownership_conflicts_original_label_id_detected_at",
        "ownership_conflicts",
        ["original_label_id", "detected_at", "id"],
    )
    op.create_index(
        "ix_ownership_conflicts_detected_at_id", "ownership_conflicts", ["detected_at", "id"]
    )
    op.create_table(
        "conflict_holds",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("conflict_id", sa.Uuid(), nullable=False),
        sa.Column("use_id", sa.Uuid(), nullable=False),
        sa.Column("track_id", sa.Uuid(), nullable=False),
        sa.Column("label_id", sa.Uuid(), nullable=False),
        sa.Column("check_id", sa.Uuid(), nullable=False),
        sa.Column("hold_transaction_id", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount_micros > 0", name=op.f("ck_conflict_holds_amount_positive")),
        sa.ForeignKeyConstraint(
            ["conflict_id"],
            ["ownership_conflicts.id"],
            name=op.f("fk_conflict_holds_conflict_id_ownership_conflicts"),
        ),
        sa.ForeignKeyConstraint(
            ["use_id"], ["uses.id"], name=op.f("fk_conflict_holds_use_id_uses")
        ),
        sa.ForeignKeyConstraint(
            ["track_id"], ["tracks.id"], name=op.f("fk_conflict_holds_track_id_tracks")
        ),
        sa.ForeignKeyConstraint(
            ["label_id"],
            ["organisations.id"],
            name=op.f("fk_conflict_holds_label_id_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["check_id"], ["checks.id"], name=op.f("fk_conflict_holds_check_id_checks")
        ),
        sa.ForeignKeyConstraint(
            ["hold_transaction_id"],
            ["ledger_transactions.id"],
            name=op.f("fk_conflict_holds_hold_transaction_id_ledger_transactions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conflict_holds")),
        sa.UniqueConstraint("use_id", name=op.f("uq_conflict_holds_use_id")),
        sa.UniqueConstraint(
            "hold_transaction_id", name=op.f("uq_conflict_holds_hold_transaction_id")
        ),
    )
    op.create_index(op.f("ix_conflict_holds_conflict_id"), "conflict_holds", ["conflict_id"])
    # Holds are facts about ledger transactions: append-only, like the ledger.
    op.execute(
        "CREATE TRIGGER conflict_holds_append_only BEFORE UPDATE OR DELETE ON conflict_holds "
        "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS conflict_holds_append_only ON conflict_holds")
    op.drop_index(op.f("ix_conflict_holds_conflict_id"), table_name="conflict_holds")
    op.drop_table("conflict_holds")
    op.drop_index("ix_ownership_conflicts_detected_at_id", table_name="ownership_conflicts")
    op.drop_index(
        "ix_ownership_conflicts_original_label_id_detected_at", table_name="ownership_conflicts"
    )
    op.drop_index("ix_ownership_conflicts_label_id_detected_at", table_name="ownership_conflicts")
    op.drop_index("ix_ownership_conflicts_original_track_id", table_name="ownership_conflicts")
    op.drop_table("ownership_conflicts")
    op.drop_constraint(op.f("fk_tracks_duplicate_of_tracks"), "tracks", type_="foreignkey")
    op.drop_column("tracks", "duplicate_of")
