"""predictions grouped in sets: prediction_set (dataset, model version, run) and prediction rows keyed by set

Each prediction row used to repeat its dataset id (64 characters), model version and run id (36), keyed by
(dataset_id, row_id, model_version_id) in an index beside the table. The rows now name their set, which holds
those once; on SQLite the table is WITHOUT ROWID, its key's B-tree the only one. The rows are copied; a
(dataset, model version) whose rows were written by several runs keeps the first run id in sort order.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _old_aside(name: str) -> None:
    """Rename table ``prediction`` to ``name``; on PostgreSQL its primary key's name too, which the new table takes."""
    op.rename_table("prediction", name)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE {name} RENAME CONSTRAINT prediction_pkey TO {name}_pkey")


def upgrade() -> None:
    op.create_table(
        "prediction_set",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
        sa.ForeignKeyConstraint(["model_version_id"], ["model_version.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dataset_id", "model_version_id"),
    )
    _old_aside("prediction_old")
    op.create_table(
        "prediction",
        sa.Column("set_id", sa.Integer(), nullable=False),
        sa.Column("row_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("label", sa.Integer(), nullable=True),
        sa.Column("actual", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["set_id"], ["prediction_set.id"]),
        sa.PrimaryKeyConstraint("set_id", "row_id"),
        sqlite_with_rowid=False,
    )
    op.execute("INSERT INTO prediction_set (dataset_id, model_version_id, run_id) "
               "SELECT dataset_id, model_version_id, MIN(run_id) FROM prediction_old "
               "GROUP BY dataset_id, model_version_id ORDER BY MIN(run_id), dataset_id, model_version_id")
    op.execute("INSERT INTO prediction (set_id, row_id, score, label, actual) "
               "SELECT s.id, p.row_id, p.score, p.label, p.actual FROM prediction_old p JOIN prediction_set s "
               "ON s.dataset_id = p.dataset_id AND s.model_version_id = p.model_version_id")
    op.drop_table("prediction_old")


def downgrade() -> None:
    _old_aside("prediction_old")
    op.create_table(
        "prediction",
        sa.Column("dataset_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("row_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("label", sa.Integer(), nullable=True),
        sa.Column("actual", sa.Integer(), nullable=True),
        sa.Column("run_id", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
        sa.ForeignKeyConstraint(["model_version_id"], ["model_version.id"]),
        sa.PrimaryKeyConstraint("dataset_id", "row_id", "model_version_id"),
    )
    op.execute("INSERT INTO prediction (dataset_id, row_id, model_version_id, score, label, actual, run_id) "
               "SELECT s.dataset_id, p.row_id, s.model_version_id, p.score, p.label, p.actual, s.run_id "
               "FROM prediction_old p JOIN prediction_set s ON s.id = p.set_id")
    op.drop_table("prediction_old")
    op.drop_table("prediction_set")
