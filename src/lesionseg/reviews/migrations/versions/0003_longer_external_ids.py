"""External identifiers up to 200 characters (accession numbers with a site and visit prefix run long).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


# SQLite does not enforce a VARCHAR's length, so only other databases need the change. There, it must not be
# made in batch mode: SQLite's batch mode copies the table and drops the old one, and with foreign keys on, that
# drop would cascade into every review and history row.
def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("cases", "external_id", type_=sa.String(200), existing_type=sa.String(128))


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("cases", "external_id", type_=sa.String(128), existing_type=sa.String(200))
