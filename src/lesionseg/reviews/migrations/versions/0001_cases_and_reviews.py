"""Cases and their reviews.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("image_sha256", sa.String(64), nullable=False),
        sa.Column("image_bytes", sa.Integer, nullable=False),
        sa.Column("image_media_type", sa.String(32), nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=False),
        sa.Column("samples", sa.Integer, nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("threshold", sa.Float, nullable=False),
        sa.Column("coverage", sa.Float, nullable=True),
        sa.Column("tta", sa.Boolean, nullable=False),
        sa.Column("uncertainty_score", sa.Float, nullable=False),
        sa.Column("review_recommended", sa.Boolean, nullable=False),
        sa.Column("out_of_distribution", sa.Boolean, nullable=True),
        sa.Column("ood_score", sa.Float, nullable=True),
        sa.Column("mask_rle", sa.JSON, nullable=False),
    )
    op.create_index("ix_cases_created_at", "cases", ["created_at"])
    op.create_index("ix_cases_image_sha256", "cases", ["image_sha256"])
    op.create_index("ix_cases_uncertainty_score", "cases", ["uncertainty_score"])
    op.create_table(
        "reviews",
        sa.Column("case_id", sa.String(32), sa.ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("corrected_mask_rle", sa.JSON, nullable=True),
        sa.Column("reviewer_key_id", sa.String(32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index("ix_reviews_status", "reviews", ["status"])


def downgrade() -> None:
    op.drop_table("reviews")
    op.drop_table("cases")
