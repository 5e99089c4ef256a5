"""suspension, recovery keys, audit trail, credit limits, claims tied to a process

Revision ID: 0004_reliability
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_reliability"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "organisations", sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("organisations", sa.Column("suspension_reason", sa.Text(), nullable=True))
    op.add_column("organisations", sa.Column("credit_limit_micros", sa.BigInteger(), nullable=True))
    op.create_check_constraint(
        op.f("ck_organisations_credit_limit_not_negative"),
        "organisations",
        "credit_limit_micros >= 0",
    )
    op.create_check_constraint(
        op.f("ck_organisations_suspension_has_reason"),
        "organisations",
        "(suspended_at IS NULL) = (suspension_reason IS NULL)",
    )
    op.add_column(
        "api_keys",
        sa.Column("recovery", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("api_keys", sa.Column("revoked_by_org_id", sa.Uuid(), nullable=True))
    op.add_column("api_keys", sa.Column("revocation_reason", sa.Text(), nullable=True))
    op.create_foreign_key(
        op.f("fk_api_keys_revoked_by_org_id_organisations"),
        "api_keys",
        "organisations",
        ["revoked_by_org_id"],
        ["id"],
    )
    op.create_table(
        "org_audit_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_org_id", sa.Uuid(), nullable=True),
        sa.Column("actor_key_id", sa.Uuid(), nullable=True),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("target_org_id", sa.Uuid(), nullable=False),
        sa.Column("target_key_id", sa.Uuid(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["actor_org_id"],
            ["organisations.id"],
            name=op.f("fk_org_audit_events_actor_org_id_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["actor_key_id"],
            ["api_keys.id"],
            name=op.f("fk_org_audit_events_actor_key_id_api_keys"),
        ),
        sa.ForeignKeyConstraint(
            ["target_org_id"],
            ["organisations.id"],
            name=op.f("fk_org_audit_events_target_org_id_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["target_key_id"],
            ["api_keys.id"],
            name=op.f("fk_org_audit_events_target_key_id_api_keys"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_org_audit_events")),
    )
    op.create_index(
        "ix_org_audit_events_target_org_id_id", "org_audit_events", ["target_org_id", "id"]
    )
    op.add_column("idempotency_keys", sa.Column("boot_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("idempotency_keys", "boot_id")
    op.drop_index("ix_org_audit_events_target_org_id_id", table_name="org_audit_events")
    op.drop_table("org_audit_events")
    op.drop_constraint(
        op.f("fk_api_keys_revoked_by_org_id_organisations"), "api_keys", type_="foreignkey"
    )
    op.drop_column("api_keys", "revocation_reason")
    op.drop_column("api_keys", "revoked_by_org_id")
    op.drop_column("api_keys", "recovery")
    op.drop_constraint(op.f("ck_organisations_suspension_has_reason"), "organisations")
    op.drop_constraint(op.f("ck_organisations_credit_limit_not_negative"), "organisations")
    op.drop_column("organisations", "credit_limit_micros")
    op.drop_column("organisations", "suspension_reason")
    op.drop_column("organisations", "suspended_at")
