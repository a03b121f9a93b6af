"""the time a batch's data is from: dataset_version.data_from / data_to, metric_point.batch_time

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dataset_version") as batch:
        batch.add_column(sa.Column("data_from", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("data_to", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    with op.batch_alter_table("metric_point") as batch:
        batch.add_column(sa.Column("batch_time", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("metric_point") as batch:
        batch.drop_column("batch_time")
    with op.batch_alter_table("dataset_version") as batch:
        batch.drop_column("data_to")
        batch.drop_column("data_from")
