"""organisations, api keys, catalogues and license terms

Revision ID: 0001
Revises:
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "organisations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('operator', 'label', 'ai_company', 'auditor')",
            name=op.f("ck_organisations_kind_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organisations")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name=op.f("fk_api_keys_org_id_organisations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index(op.f("ix_api_keys_org_id"), "api_keys", ["org_id"], unique=False)
    op.create_table(
        "catalogues",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("label_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["label_id"], ["organisations.id"], name=op.f("fk_catalogues_label_id_organisations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalogues")),
    )
    op.create_index(op.f("ix_catalogues_label_id"), "catalogues", ["label_id"], unique=False)
    op.create_table(
        "license_terms",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("catalogue_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("rate_per_use_micros", sa.BigInteger(), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("valid_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('active', 'suspended')", name=op.f("ck_license_terms_status_known")
        ),
        sa.CheckConstraint(
            "rate_per_use_micros >= 0", name=op.f("ck_license_terms_rate_not_negative")
        ),
        sa.CheckConstraint(
            "threshold >= 0 AND threshold <= 1",
            name=op.f("ck_license_terms_threshold_unit_interval"),
        ),
        sa.CheckConstraint(
            "valid_from IS NULL OR valid_to IS NULL OR valid_to > valid_from",
            name=op.f("ck_license_terms_validity_ordered"),
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_license_terms_version_positive")),
        sa.ForeignKeyConstraint(
            ["catalogue_id"],
            ["catalogues.id"],
            name=op.f("fk_license_terms_catalogue_id_catalogues"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_license_terms")),
        sa.UniqueConstraint(
            "catalogue_id", "version", name=op.f("uq_license_terms_catalogue_id_version")
        ),
    )


def downgrade() -> None:
    op.drop_table("license_terms")
    op.drop_index(op.f("ix_catalogues_label_id"), table_name="catalogues")
    op.drop_table("catalogues")
    op.drop_index(op.f("ix_api_keys_org_id"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("organisations")
