"""training preferences, penalty rates, preferences on uses, ISRC lookups

Revision ID: 0006_rights
Revises: 0005_money
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_rights"
down_revision: str | None = "0005_money"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

USES = ("data_mining", "ai_training", "ai_generative_training", "ai_inference")
KNOWN = "'allowed', 'constrained', 'notAllowed'"


def _preference_checks() -> list[sa.CheckConstraint]:
    checks = []
    for column in USES:
        checks.append(
            sa.CheckConstraint(
                f"{column} IN ({KNOWN})", name=op.f(f"ck_training_preferences_{column}_known")
            )
        )
        checks.append(
            sa.CheckConstraint(
                f"({column}_policy IS NOT NULL) = ({column} IS NOT DISTINCT FROM 'constrained')",
                name=op.f(f"ck_training_preferences_{column}_policy_iff_constrained"),
            )
        )
    every = " AND ".join(f"{c} IS NOT NULL" for c in USES)
    checks.append(
        sa.CheckConstraint(
            f"track_id IS NOT NULL OR ({every})",
            name=op.f("ck_training_preferences_default_complete"),
        )
    )
    return checks


def upgrade() -> None:
    columns = []
    for column in USES:
        columns.append(sa.Column(column, sa.String(length=16), nullable=True))
        columns.append(sa.Column(f"{column}_policy", sa.String(length=2000), nullable=True))
    op.create_table(
        "training_preferences",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("catalogue_id", sa.Uuid(), nullable=False),
        sa.Column("track_id", sa.Uuid(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        *columns,
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        *_preference_checks(),
        sa.CheckConstraint("version >= 1", name=op.f("ck_training_preferences_version_positive")),
        sa.ForeignKeyConstraint(
            ["catalogue_id"],
            ["catalogues.id"],
            name=op.f("fk_training_preferences_catalogue_id_catalogues"),
        ),
        sa.ForeignKeyConstraint(
            ["track_id"], ["tracks.id"], name=op.f("fk_training_preferences_track_id_tracks")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_preferences")),
        sa.UniqueConstraint(
            "catalogue_id", "version", name=op.f("uq_training_preferences_catalogue_id_version")
        ),
    )
    op.create_index(
        "ix_training_preferences_track_id_version",
        "training_preferences",
        ["track_id", "version"],
        unique=False,
    )
    op.create_index(
        "ix_training_preferences_defaults",
        "training_preferences",
        ["catalogue_id", "version"],
        unique=False,
        postgresql_where=sa.text("track_id IS NULL"),
    )

    op.add_column(
        "license_terms", sa.Column("penalty_rate_per_use_micros", sa.BigInteger(), nullable=True)
    )
    op.create_check_constraint(
        op.f("ck_license_terms_penalty_at_least_rate"),
        "license_terms",
        "penalty_rate_per_use_micros IS NULL OR penalty_rate_per_use_micros >= rate_per_use_micros",
    )

    op.create_index("ix_tracks_isrc", "tracks", ["isrc"], unique=False)

    op.add_column(
        "uses",
        sa.Column("preference", sa.String(length=16), server_default="allowed", nullable=False),
    )
    op.add_column("uses", sa.Column("preferences_version", sa.Integer(), nullable=True))
    op.create_check_constraint(op.f("ck_uses_preference_known"), "uses", f"preference IN ({KNOWN})")
    op.create_index(
        "ix_uses_not_allowed_created_at",
        "uses",
        ["created_at", "id"],
        unique=False,
        postgresql_where=sa.text("preference = 'notAllowed'"),
    )


def downgrade() -> None:
    op.drop_index("ix_uses_not_allowed_created_at", table_name="uses")
    op.drop_constraint(op.f("ck_uses_preference_known"), "uses", type_="check")
    op.drop_column("uses", "preferences_version")
    op.drop_column("uses", "preference")
    op.drop_index("ix_tracks_isrc", table_name="tracks")
    op.drop_constraint(
        op.f("ck_license_terms_penalty_at_least_rate"), "license_terms", type_="check"
    )
    op.drop_column("license_terms", "penalty_rate_per_use_micros")
    op.drop_index("ix_training_preferences_defaults", table_name="training_preferences")
    op.drop_index("ix_training_preferences_track_id_version", table_name="training_preferences")
    op.drop_table("training_preferences")
