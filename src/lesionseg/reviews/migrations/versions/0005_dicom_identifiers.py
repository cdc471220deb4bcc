"""Where a DICOM case came from: the patient, study, series and instance identifiers of its source picture.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Each DICOM identifier is at most 64 characters (LO and UI value representations); picture files leave them NULL.
COLUMNS = (
    "dicom_patient_id",
    "dicom_accession_number",
    "dicom_study_instance_uid",
    "dicom_series_instance_uid",
    "dicom_sop_instance_uid",
)


# Plain ADD COLUMNs, never SQLite's batch mode, whose table copy would cascade the drop of the old table into every
# history row (see 0003).
def upgrade() -> None:
    for column in COLUMNS:
        op.add_column("cases", sa.Column(column, sa.String(64), nullable=True))
    op.create_index("ix_cases_dicom_sop_instance_uid", "cases", ["dicom_sop_instance_uid"])


def downgrade() -> None:
    op.drop_index("ix_cases_dicom_sop_instance_uid", table_name="cases")
    for column in reversed(COLUMNS):
        op.drop_column("cases", column)
