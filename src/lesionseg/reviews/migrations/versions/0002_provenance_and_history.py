"""A case's provenance (its file name and the caller's own identifier) and every verdict it has had.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite cannot add a column with an index in place; PostgreSQL alters as usual.
    with op.batch_alter_table("cases") as cases:
        cases.add_column(sa.Column("filename", sa.String(255), nullable=True))
        cases.add_column(sa.Column("external_id", sa.String(128), nullable=True))
        cases.create_index("ix_cases_external_id", ["external_id"])
    op.create_table(
        "review_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.String(32), sa.ForeignKey("cases.id", ondelete="CASCADE"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("corrected_mask_rle", sa.JSON, nullable=True),
        sa.Column("reviewer_key_id", sa.String(32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_review_events_case_id", "review_events", ["case_id"])
    # Cases from before this revision start their history with the verdict they have now: earlier ones
    # were never kept.
    op.execute(
        "INSERT INTO review_events (case_id, version, status, corrected_mask_rle, reviewer_key_id, created_at) "
        "SELECT case_id, version, status, corrected_mask_rle, reviewer_key_id, updated_at FROM reviews"
    )


def downgrade() -> None:
    op.drop_table("review_events")
    with op.batch_alter_table("cases") as cases:
        cases.drop_index("ix_cases_external_id")
        cases.drop_column("external_id")
        cases.drop_column("filename")
