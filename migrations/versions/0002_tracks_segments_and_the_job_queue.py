"""tracks, segments and the job queue

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

# Procrastinate's schema, frozen as shipped by procrastinate 3.10 (unchanged since 3.4), so this
# migration means the same thing whatever version is installed. A procrastinate upgrade that
# ships new files in procrastinate/sql/migrations/ gets its own revision applying them.
PROCRASTINATE_SCHEMA = Path(__file__).parent.parent / "sql" / "procrastinate_schema_3.10.sql"
PROCRASTINATE_TABLES = [
    "procrastinate_events",
    "procrastinate_periodic_defers",
    "procrastinate_jobs",
    "procrastinate_workers",
]
PROCRASTINATE_TYPES = [
    "procrastinate_job_to_defer_v1",
    "procrastinate_job_event_type",
    "procrastinate_job_status",
]

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(sa.text(PROCRASTINATE_SCHEMA.read_text()))
    op.execute("CREATE SEQUENCE track_withdrawal_seq")
    op.create_table(
        "tracks",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("catalogue_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("artist", sa.String(length=500), nullable=False),
        sa.Column("isrc", sa.String(length=12), nullable=True),
        sa.Column("external_id", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("audio_sha256", sa.String(length=64), nullable=False),
        sa.Column("audio_format", sa.String(length=8), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("duration_s", sa.Double(), nullable=False),
        sa.Column("sample_rate", sa.Integer(), nullable=False),
        sa.Column("channels", sa.Integer(), nullable=False),
        sa.Column("embedder", sa.String(length=32), nullable=True),
        sa.Column("embedder_version", sa.String(length=64), nullable=True),
        sa.Column("segment_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("indexed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("withdrawal_seq", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "(status = 'failed') = (error IS NOT NULL)", name=op.f("ck_tracks_error_iff_failed")
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'indexed', 'failed')", name=op.f("ck_tracks_status_known")
        ),
        sa.ForeignKeyConstraint(
            ["catalogue_id"], ["catalogues.id"], name=op.f("fk_tracks_catalogue_id_catalogues")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracks")),
        sa.UniqueConstraint("withdrawal_seq", name=op.f("uq_tracks_withdrawal_seq")),
    )
    op.create_index(
        "ix_tracks_catalogue_id_created_at",
        "tracks",
        ["catalogue_id", "created_at", "id"],
        unique=False,
    )
    op.create_index(
        "uq_tracks_catalogue_id_audio_sha256",
        "tracks",
        ["catalogue_id", "audio_sha256"],
        unique=True,
        postgresql_where=sa.text("withdrawn_at IS NULL"),
    )
    op.create_table(
        "segments",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("track_id", sa.Uuid(), nullable=False),
        sa.Column("embedder", sa.String(length=32), nullable=False),
        sa.Column("embedder_version", sa.String(length=64), nullable=False),
        sa.Column("start_s", sa.Double(), nullable=False),
        sa.Column("duration_s", sa.Double(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("duration_s > 0", name=op.f("ck_segments_duration_positive")),
        sa.CheckConstraint("start_s >= 0", name=op.f("ck_segments_start_not_negative")),
        sa.ForeignKeyConstraint(
            ["track_id"], ["tracks.id"], name=op.f("fk_segments_track_id_tracks")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segments")),
    )
    op.create_index(
        "ix_segments_embedder_id", "segments", ["embedder", "embedder_version", "id"], unique=False
    )
    op.create_index(op.f("ix_segments_track_id"), "segments", ["track_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_segments_track_id"), table_name="segments")
    op.drop_index("ix_segments_embedder_id", table_name="segments")
    op.drop_table("segments")
    op.drop_index(
        "uq_tracks_catalogue_id_audio_sha256",
        table_name="tracks",
        postgresql_where=sa.text("withdrawn_at IS NULL"),
    )
    op.drop_index("ix_tracks_catalogue_id_created_at", table_name="tracks")
    op.drop_table("tracks")
    op.execute("DROP SEQUENCE track_withdrawal_seq")
    op.execute(f"DROP TABLE {', '.join(PROCRASTINATE_TABLES)} CASCADE")
    # Every function the schema created is named procrastinate_*; drop them by catalogue.
    op.execute(
        """
        DO $$
        DECLARE f record;
        BEGIN
            FOR f IN SELECT p.oid::regprocedure AS sig FROM pg_proc p
                     JOIN pg_namespace n ON n.oid = p.pronamespace
                     WHERE n.nspname = current_schema() AND p.proname LIKE 'procrastinate%'
            LOOP
                EXECUTE 'DROP FUNCTION ' || f.sig || ' CASCADE';
            END LOOP;
        END $$;
        """
    )
    op.execute(f"DROP TYPE {', '.join(PROCRASTINATE_TYPES)} CASCADE")
