"""Whether a reviewer confirmed that a case the gate flagged is dermoscopy: such a case goes into an export.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


# Verdicts given before this revision recorded no confirmation: they stay unconfirmed (false), so an export
# keeps leaving them out unless asked, as it did. A plain ADD COLUMN, never SQLite's batch mode, whose table
# copy would cascade the drop of the old table into every history row (see 0003).
def upgrade() -> None:
    op.add_column(
        "reviews",
        sa.Column("out_of_distribution_confirmed", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_column("reviews", "out_of_distribution_confirmed")
