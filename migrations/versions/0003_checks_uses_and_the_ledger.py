"""checks, uses and the ledger

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

LEDGER_TABLES = ("ledger_accounts", "ledger_transactions", "ledger_postings")

# The database itself keeps the ledger honest: rows are never changed or removed, and every
# transaction's postings (at least two) sum to zero when the enclosing transaction commits.
LEDGER_FUNCTIONS = """
CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger table % is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'integrity_constraint_violation',
              HINT = 'correct a transaction by appending a reversal';
END $$;

CREATE FUNCTION ledger_check_balance() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    tx_id bigint;
    total numeric;
    n integer;
BEGIN
    IF TG_TABLE_NAME = 'ledger_transactions' THEN
        tx_id := NEW.id;
    ELSE
        tx_id := NEW.transaction_id;
    END IF;
    SELECT coalesce(sum(amount_micros), 0), count(*) INTO total, n
        FROM ledger_postings WHERE transaction_id = tx_id;
    IF n < 2 OR total <> 0 THEN
        RAISE EXCEPTION 'ledger transaction % does not balance: % postings summing to %',
            tx_id, n, total USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
"""

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "checks",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("ai_company_id", sa.Uuid(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("audio_sha256", sa.String(length=64), nullable=False),
        sa.Column("duration_s", sa.Double(), nullable=False),
        sa.Column("generation_id", sa.String(length=200), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("request_metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("embedder", sa.String(length=32), nullable=False),
        sa.Column("embedder_version", sa.String(length=64), nullable=False),
        sa.Column("index_watermark", sa.BigInteger(), nullable=False),
        sa.Column("params", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("charge_micros", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.CheckConstraint("charge_micros >= 0", name=op.f("ck_checks_charge_not_negative")),
        sa.ForeignKeyConstraint(
            ["ai_company_id"],
            ["organisations.id"],
            name=op.f("fk_checks_ai_company_id_organisations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checks")),
        sa.UniqueConstraint(
            "ai_company_id", "idempotency_key", name=op.f("uq_checks_ai_company_id_idempotency_key")
        ),
    )
    op.create_index(
        "ix_checks_ai_company_id_created_at",
        "checks",
        ["ai_company_id", "created_at", "id"],
        unique=False,
    )
    op.create_index("ix_checks_created_at_id", "checks", ["created_at", "id"], unique=False)
    op.create_index(op.f("ix_checks_generation_id"), "checks", ["generation_id"], unique=False)
    op.create_table(
        "ledger_accounts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(kind = 'platform') = (org_id IS NULL)",
            name=op.f("ck_ledger_accounts_platform_has_no_org"),
        ),
        sa.CheckConstraint(
            "kind IN ('ai_company', 'label', 'platform')",
            name=op.f("ck_ledger_accounts_kind_known"),
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name=op.f("fk_ledger_accounts_org_id_organisations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_accounts")),
        sa.UniqueConstraint(
            "org_id",
            "currency",
            name=op.f("uq_ledger_accounts_org_id_currency"),
            postgresql_nulls_not_distinct=True,
        ),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("ai_company_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("check_id", sa.Uuid(), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "(check_id IS NULL) = (completed_at IS NULL)",
            name=op.f("ck_idempotency_keys_done_has_check"),
        ),
        sa.ForeignKeyConstraint(
            ["ai_company_id"],
            ["organisations.id"],
            name=op.f("fk_idempotency_keys_ai_company_id_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["check_id"], ["checks.id"], name=op.f("fk_idempotency_keys_check_id_checks")
        ),
        sa.PrimaryKeyConstraint("ai_company_id", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_table(
        "ledger_transactions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("check_id", sa.Uuid(), nullable=True),
        sa.Column("reverses_id", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.CheckConstraint(
            "(kind = 'reversal') = (reverses_id IS NOT NULL)",
            name=op.f("ck_ledger_transactions_reversal_refs"),
        ),
        sa.CheckConstraint("hash ~ '^[0-9a-f]{64}$'", name=op.f("ck_ledger_transactions_hash_hex")),
        sa.CheckConstraint(
            "kind IN ('charge', 'reversal')", name=op.f("ck_ledger_transactions_kind_known")
        ),
        sa.CheckConstraint(
            "prev_hash ~ '^[0-9a-f]{64}$'", name=op.f("ck_ledger_transactions_prev_hash_hex")
        ),
        sa.ForeignKeyConstraint(
            ["check_id"], ["checks.id"], name=op.f("fk_ledger_transactions_check_id_checks")
        ),
        sa.ForeignKeyConstraint(
            ["reverses_id"],
            ["ledger_transactions.id"],
            name=op.f("fk_ledger_transactions_reverses_id_ledger_transactions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_transactions")),
        sa.UniqueConstraint("hash", name=op.f("uq_ledger_transactions_hash")),
        sa.UniqueConstraint("reverses_id", name=op.f("uq_ledger_transactions_reverses_id")),
    )
    op.create_index(
        op.f("ix_ledger_transactions_check_id"), "ledger_transactions", ["check_id"], unique=False
    )
    op.create_table(
        "uses",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("check_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ai_company_id", sa.Uuid(), nullable=False),
        sa.Column("label_id", sa.Uuid(), nullable=False),
        sa.Column("catalogue_id", sa.Uuid(), nullable=False),
        sa.Column("track_id", sa.Uuid(), nullable=False),
        sa.Column("license_terms_id", sa.Uuid(), nullable=False),
        sa.Column("terms_version", sa.Integer(), nullable=False),
        sa.Column("rate_per_use_micros", sa.BigInteger(), nullable=False),
        sa.Column("resemblance", sa.Double(), nullable=False),
        sa.Column("share", sa.Double(), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("ledger_transaction_id", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("amount_micros >= 0", name=op.f("ck_uses_amount_not_negative")),
        sa.CheckConstraint(
            "resemblance >= 0 AND resemblance <= 1", name=op.f("ck_uses_resemblance_unit")
        ),
        sa.CheckConstraint("share > 0 AND share <= 1", name=op.f("ck_uses_share_unit")),
        sa.ForeignKeyConstraint(
            ["ai_company_id"],
            ["organisations.id"],
            name=op.f("fk_uses_ai_company_id_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["catalogue_id"], ["catalogues.id"], name=op.f("fk_uses_catalogue_id_catalogues")
        ),
        sa.ForeignKeyConstraint(["check_id"], ["checks.id"], name=op.f("fk_uses_check_id_checks")),
        sa.ForeignKeyConstraint(
            ["label_id"], ["organisations.id"], name=op.f("fk_uses_label_id_organisations")
        ),
        sa.ForeignKeyConstraint(
            ["ledger_transaction_id"],
            ["ledger_transactions.id"],
            name=op.f("fk_uses_ledger_transaction_id_ledger_transactions"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.ForeignKeyConstraint(
            ["license_terms_id"],
            ["license_terms.id"],
            name=op.f("fk_uses_license_terms_id_license_terms"),
        ),
        sa.ForeignKeyConstraint(["track_id"], ["tracks.id"], name=op.f("fk_uses_track_id_tracks")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_uses")),
    )
    op.create_index(
        "ix_uses_ai_company_id_created_at",
        "uses",
        ["ai_company_id", "created_at", "id"],
        unique=False,
    )
    op.create_index(op.f("ix_uses_check_id"), "uses", ["check_id"], unique=False)
    op.create_index("ix_uses_created_at_id", "uses", ["created_at", "id"], unique=False)
    op.create_index(
        "ix_uses_label_id_created_at", "uses", ["label_id", "created_at", "id"], unique=False
    )
    op.create_index(
        op.f("ix_uses_ledger_transaction_id"), "uses", ["ledger_transaction_id"], unique=False
    )
    op.create_index(op.f("ix_uses_track_id"), "uses", ["track_id"], unique=False)
    op.create_table(
        "ledger_postings",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("transaction_id", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("use_id", sa.Uuid(), nullable=True),
        sa.CheckConstraint("amount_micros <> 0", name=op.f("ck_ledger_postings_amount_not_zero")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["ledger_accounts.id"],
            name=op.f("fk_ledger_postings_account_id_ledger_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transactions.id"],
            name=op.f("fk_ledger_postings_transaction_id_ledger_transactions"),
        ),
        sa.ForeignKeyConstraint(
            ["use_id"], ["uses.id"], name=op.f("fk_ledger_postings_use_id_uses")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_postings")),
    )
    op.create_index(
        "ix_ledger_postings_account_id_transaction_id",
        "ledger_postings",
        ["account_id", "transaction_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_ledger_postings_transaction_id"),
        "ledger_postings",
        ["transaction_id"],
        unique=False,
    )
    op.create_index(op.f("ix_ledger_postings_use_id"), "ledger_postings", ["use_id"], unique=False)
    op.execute(LEDGER_FUNCTIONS)
    for table in LEDGER_TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()"
        )
    for table in ("ledger_transactions", "ledger_postings"):
        op.execute(
            f"CREATE CONSTRAINT TRIGGER {table}_balance AFTER INSERT ON {table} "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_balance()"
        )


def downgrade() -> None:
    # Dropping the tables drops their triggers; the functions go last.
    op.drop_index(op.f("ix_ledger_postings_use_id"), table_name="ledger_postings")
    op.drop_index(op.f("ix_ledger_postings_transaction_id"), table_name="ledger_postings")
    op.drop_index("ix_ledger_postings_account_id_transaction_id", table_name="ledger_postings")
    op.drop_table("ledger_postings")
    op.drop_index(op.f("ix_uses_track_id"), table_name="uses")
    op.drop_index(op.f("ix_uses_ledger_transaction_id"), table_name="uses")
    op.drop_index("ix_uses_label_id_created_at", table_name="uses")
    op.drop_index("ix_uses_created_at_id", table_name="uses")
    op.drop_index(op.f("ix_uses_check_id"), table_name="uses")
    op.drop_index("ix_uses_ai_company_id_created_at", table_name="uses")
    op.drop_table("uses")
    op.drop_index(op.f("ix_ledger_transactions_check_id"), table_name="ledger_transactions")
    op.drop_table("ledger_transactions")
    op.drop_table("idempotency_keys")
    op.drop_table("ledger_accounts")
    op.drop_index(op.f("ix_checks_generation_id"), table_name="checks")
    op.drop_index("ix_checks_created_at_id", table_name="checks")
    op.drop_index("ix_checks_ai_company_id_created_at", table_name="checks")
    op.drop_table("checks")
    op.execute("DROP FUNCTION ledger_check_balance()")
    op.execute("DROP FUNCTION ledger_refuse_change()")
