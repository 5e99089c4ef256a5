"""money workflow: disputes with held money, closed periods, excluded track spans

Revision ID: 0005_money
Revises: 0004_reliability

Ledger transactions gain who caused them (`actor_id`), what they answer (`answers_id`), their
dispute and the closed month they correct (`adjusts_period`); new kinds hold, release, uphold
and adjustment; a hold is released or upheld at most once. Labels get held accounts. Months
close (`ledger_periods`), and from then on the database refuses any transaction or posting
dated in a closed month.

Downgrading refuses while the ledger holds rows of the new kinds or held accounts: ledger rows
are never removed.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_money"
down_revision: str | None = "0004_reliability"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The latest closed month is the "closed through" mark: nothing dated on or before its end is
# written. Checked once per INSERT statement over all its rows (a batch of appends is one
# statement per table), not once per row.
CLOSED_PERIOD_FUNCTION = """
CREATE FUNCTION ledger_refuse_closed_period() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    through date;
    dated timestamptz;
BEGIN
    SELECT max(month) INTO through FROM ledger_periods;
    IF through IS NULL THEN
        RETURN NULL;
    END IF;
    IF TG_TABLE_NAME = 'ledger_transactions' THEN
        SELECT min(created_at) INTO dated FROM new_rows;
    ELSE
        SELECT min(t.created_at) INTO dated
            FROM new_rows p JOIN ledger_transactions t ON t.id = p.transaction_id;
    END IF;
    IF dated < (through + interval '1 month') AT TIME ZONE 'UTC' THEN
        RAISE EXCEPTION 'the ledger is closed through %: nothing dated % can be written',
            to_char(through, 'YYYY-MM'), dated
            USING ERRCODE = 'integrity_constraint_violation',
                  HINT = 'append a correction in the open period';
    END IF;
    RETURN NULL;
END $$;
"""
APPEND_ONLY_TABLES = ("ledger_periods", "dispute_events")
KINDS_BEFORE = "kind IN ('charge', 'reversal')"
KINDS_AFTER = "kind IN ('charge', 'reversal', 'hold', 'release', 'uphold', 'adjustment')"


def upgrade() -> None:
    op.create_table(
        "disputes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("use_id", sa.Uuid(), nullable=False),
        sa.Column("check_id", sa.Uuid(), nullable=False),
        sa.Column("ai_company_id", sa.Uuid(), nullable=False),
        sa.Column("label_id", sa.Uuid(), nullable=False),
        sa.Column("track_id", sa.Uuid(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("review_deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("appealed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pending_transaction_id", sa.BigInteger(), nullable=True),
        sa.Column("last_transaction_id", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "(status IN ('open', 'appealed')) = (pending_transaction_id IS NOT NULL)",
            name=op.f("ck_disputes_pending_iff_undecided"),
        ),
        sa.CheckConstraint(
            "reason IN ('not_derived', 'licensed_elsewhere', 'public_domain', 'other')",
            name=op.f("ck_disputes_reason_known"),
        ),
        sa.CheckConstraint(
            "status IN ('open', 'released', 'upheld', 'appealed')",
            name=op.f("ck_disputes_status_known"),
        ),
        sa.CheckConstraint("amount_micros > 0", name=op.f("ck_disputes_amount_positive")),
        sa.ForeignKeyConstraint(
            ["ai_company_id"],
            ["organisations.id"],
            name=op.f("fk_disputes_ai_company_id_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["check_id"], ["checks.id"], name=op.f("fk_disputes_check_id_checks")
        ),
        sa.ForeignKeyConstraint(
            ["label_id"], ["organisations.id"], name=op.f("fk_disputes_label_id_organisations")
        ),
        sa.ForeignKeyConstraint(
            ["last_transaction_id"],
            ["ledger_transactions.id"],
            name=op.f("fk_disputes_last_transaction_id_ledger_transactions"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.ForeignKeyConstraint(
            ["pending_transaction_id"],
            ["ledger_transactions.id"],
            name=op.f("fk_disputes_pending_transaction_id_ledger_transactions"),
            initially="DEFERRED",
            deferrable=True,
        ),
        sa.ForeignKeyConstraint(
            ["track_id"], ["tracks.id"], name=op.f("fk_disputes_track_id_tracks")
        ),
        sa.ForeignKeyConstraint(["use_id"], ["uses.id"], name=op.f("fk_disputes_use_id_uses")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_disputes")),
        sa.UniqueConstraint("use_id", name=op.f("uq_disputes_use_id")),
    )
    op.create_index(
        "ix_disputes_ai_company_id_opened_at",
        "disputes",
        ["ai_company_id", "opened_at", "id"],
        unique=False,
    )
    op.create_index(
        "ix_disputes_label_id_opened_at", "disputes", ["label_id", "opened_at", "id"], unique=False
    )
    op.create_index("ix_disputes_opened_at_id", "disputes", ["opened_at", "id"], unique=False)
    op.create_index(
        "ix_disputes_status_review_deadline",
        "disputes",
        ["status", "review_deadline"],
        unique=False,
    )
    op.create_table(
        "dispute_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("dispute_id", sa.Uuid(), nullable=False),
        sa.Column("step", sa.String(length=16), nullable=False),
        sa.Column("status_after", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column("actor_role", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ledger_transaction_id", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "(actor_role = 'system') = (actor_id IS NULL)",
            name=op.f("ck_dispute_events_system_has_no_org"),
        ),
        sa.CheckConstraint(
            "actor_role IN ('ai_company', 'label', 'operator', 'system')",
            name=op.f("ck_dispute_events_actor_role_known"),
        ),
        sa.CheckConstraint(
            "status_after IN ('open', 'released', 'upheld', 'appealed')",
            name=op.f("ck_dispute_events_status_after_known"),
        ),
        sa.CheckConstraint(
            "step IN ('opened', 'released', 'upheld', 'expired', 'appealed', "
            "'appeal_granted', 'appeal_denied')",
            name=op.f("ck_dispute_events_step_known"),
        ),
        sa.ForeignKeyConstraint(
            ["actor_id"],
            ["organisations.id"],
            name=op.f("fk_dispute_events_actor_id_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["dispute_id"], ["disputes.id"], name=op.f("fk_dispute_events_dispute_id_disputes")
        ),
        sa.ForeignKeyConstraint(
            ["ledger_transaction_id"],
            ["ledger_transactions.id"],
            name=op.f("fk_dispute_events_ledger_transaction_id_ledger_transactions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispute_events")),
    )
    op.create_index(
        op.f("ix_dispute_events_dispute_id"), "dispute_events", ["dispute_id"], unique=False
    )
    op.create_table(
        "ledger_periods",
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_by", sa.Uuid(), nullable=True),
        sa.CheckConstraint(
            "extract(day FROM month) = 1", name=op.f("ck_ledger_periods_month_starts_on_the_first")
        ),
        sa.ForeignKeyConstraint(
            ["closed_by"],
            ["organisations.id"],
            name=op.f("fk_ledger_periods_closed_by_organisations"),
        ),
        sa.PrimaryKeyConstraint("month", name=op.f("pk_ledger_periods")),
    )
    op.create_table(
        "track_exclusions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("track_id", sa.Uuid(), nullable=False),
        sa.Column("start_s", sa.Double(), nullable=False),
        sa.Column("end_s", sa.Double(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=False),
        sa.Column("dispute_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "start_s >= 0 AND end_s > start_s", name=op.f("ck_track_exclusions_span_ordered")
        ),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["organisations.id"],
            name=op.f("fk_track_exclusions_created_by_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["dispute_id"], ["disputes.id"], name=op.f("fk_track_exclusions_dispute_id_disputes")
        ),
        sa.ForeignKeyConstraint(
            ["track_id"], ["tracks.id"], name=op.f("fk_track_exclusions_track_id_tracks")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_track_exclusions")),
    )
    op.create_index(
        op.f("ix_track_exclusions_track_id"), "track_exclusions", ["track_id"], unique=False
    )

    # Accounts: labels get a held account beside their own.
    op.drop_constraint(
        op.f("uq_ledger_accounts_org_id_currency"), "ledger_accounts", type_="unique"
    )
    op.create_unique_constraint(
        op.f("uq_ledger_accounts_org_id_kind_currency"),
        "ledger_accounts",
        ["org_id", "kind", "currency"],
        postgresql_nulls_not_distinct=True,
    )
    _replace_check(
        "ledger_accounts", "kind_known", "kind IN ('ai_company', 'label', 'platform', 'held')"
    )
    _replace_check(
        "ledger_accounts",
        "platform_has_no_org",
        "kind = 'held' OR (kind = 'platform') = (org_id IS NULL)",
    )

    # Transactions: who, what they answer, the dispute, the closed month they correct.
    op.add_column("ledger_transactions", sa.Column("actor_id", sa.Uuid(), nullable=True))
    op.add_column("ledger_transactions", sa.Column("answers_id", sa.BigInteger(), nullable=True))
    op.add_column("ledger_transactions", sa.Column("dispute_id", sa.Uuid(), nullable=True))
    op.add_column("ledger_transactions", sa.Column("adjusts_period", sa.Date(), nullable=True))
    op.create_index(
        op.f("ix_ledger_transactions_answers_id"),
        "ledger_transactions",
        ["answers_id"],
        unique=False,
    )
    op.create_index(
        "ix_ledger_transactions_created_at_id",
        "ledger_transactions",
        ["created_at", "id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_ledger_transactions_dispute_id"),
        "ledger_transactions",
        ["dispute_id"],
        unique=False,
    )
    op.create_index(
        "uq_ledger_transactions_resolves",
        "ledger_transactions",
        ["answers_id"],
        unique=True,
        postgresql_where=sa.text("kind IN ('release', 'uphold')"),
    )
    op.create_foreign_key(
        op.f("fk_ledger_transactions_actor_id_organisations"),
        "ledger_transactions",
        "organisations",
        ["actor_id"],
        ["id"],
    )
    op.create_foreign_key(
        op.f("fk_ledger_transactions_answers_id_ledger_transactions"),
        "ledger_transactions",
        "ledger_transactions",
        ["answers_id"],
        ["id"],
    )
    op.create_foreign_key(
        op.f("fk_ledger_transactions_dispute_id_disputes"),
        "ledger_transactions",
        "disputes",
        ["dispute_id"],
        ["id"],
    )
    _replace_check("ledger_transactions", "kind_known", KINDS_AFTER)
    op.create_check_constraint(
        op.f("ck_ledger_transactions_answers_refs"),
        "ledger_transactions",
        "kind NOT IN ('hold', 'release', 'uphold', 'adjustment') OR answers_id IS NOT NULL",
    )
    op.create_check_constraint(
        op.f("ck_ledger_transactions_adjusts_period_is_month"),
        "ledger_transactions",
        "adjusts_period IS NULL OR extract(day FROM adjusts_period) = 1",
    )

    # Closed periods are never written again; the new histories are append-only.
    op.execute(CLOSED_PERIOD_FUNCTION)
    for table in ("ledger_transactions", "ledger_postings"):
        op.execute(
            f"CREATE TRIGGER {table}_open_period AFTER INSERT ON {table} "
            "REFERENCING NEW TABLE AS new_rows "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_closed_period()"
        )
    for table in APPEND_ONLY_TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()"
        )


def downgrade() -> None:
    for table in ("ledger_transactions", "ledger_postings"):
        op.execute(f"DROP TRIGGER {table}_open_period ON {table}")
    op.execute("DROP FUNCTION ledger_refuse_closed_period()")
    op.drop_constraint(
        op.f("ck_ledger_transactions_adjusts_period_is_month"), "ledger_transactions", type_="check"
    )
    op.drop_constraint(
        op.f("ck_ledger_transactions_answers_refs"), "ledger_transactions", type_="check"
    )
    _replace_check("ledger_transactions", "kind_known", KINDS_BEFORE)
    op.drop_constraint(
        op.f("fk_ledger_transactions_dispute_id_disputes"),
        "ledger_transactions",
        type_="foreignkey",
    )
    op.drop_constraint(
        op.f("fk_ledger_transactions_answers_id_ledger_transactions"),
        "ledger_transactions",
        type_="foreignkey",
    )
    op.drop_constraint(
        op.f("fk_ledger_transactions_actor_id_organisations"),
        "ledger_transactions",
        type_="foreignkey",
    )
    op.drop_index(
        "uq_ledger_transactions_resolves",
        table_name="ledger_transactions",
        postgresql_where=sa.text("kind IN ('release', 'uphold')"),
    )
    op.drop_index(op.f("ix_ledger_transactions_dispute_id"), table_name="ledger_transactions")
    op.drop_index("ix_ledger_transactions_created_at_id", table_name="ledger_transactions")
    op.drop_index(op.f("ix_ledger_transactions_answers_id"), table_name="ledger_transactions")
    op.drop_column("ledger_transactions", "adjusts_period")
    op.drop_column("ledger_transactions", "dispute_id")
    op.drop_column("ledger_transactions", "answers_id")
    op.drop_column("ledger_transactions", "actor_id")
    _replace_check(
        "ledger_accounts", "platform_has_no_org", "(kind = 'platform') = (org_id IS NULL)"
    )
    _replace_check("ledger_accounts", "kind_known", "kind IN ('ai_company', 'label', 'platform')")
    op.drop_constraint(
        op.f("uq_ledger_accounts_org_id_kind_currency"), "ledger_accounts", type_="unique"
    )
    op.create_unique_constraint(
        op.f("uq_ledger_accounts_org_id_currency"),
        "ledger_accounts",
        ["org_id", "currency"],
        postgresql_nulls_not_distinct=True,
    )
    op.drop_index(op.f("ix_track_exclusions_track_id"), table_name="track_exclusions")
    op.drop_table("track_exclusions")
    op.drop_table("ledger_periods")
    op.drop_index(op.f("ix_dispute_events_dispute_id"), table_name="dispute_events")
    op.drop_table("dispute_events")
    op.drop_index("ix_disputes_status_review_deadline", table_name="disputes")
    op.drop_index("ix_disputes_opened_at_id", table_name="disputes")
    op.drop_index("ix_disputes_label_id_opened_at", table_name="disputes")
    op.drop_index("ix_disputes_ai_company_id_opened_at", table_name="disputes")
    op.drop_table("disputes")


def _replace_check(table: str, name: str, condition: str) -> None:
    op.drop_constraint(op.f(f"ck_{table}_{name}"), table, type_="check")
    op.create_check_constraint(op.f(f"ck_{table}_{name}"), table, condition)
