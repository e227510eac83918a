"""report month index (SQLite only)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 03:40:00

`report users` groups cases by month of creation; on SQLite this covering index
on that very expression (report_sql.month_of) lets it read the groups in order
without touching the table or sorting. PostgreSQL hashes the groups of a
parallel scan and needs none. IF NOT EXISTS / IF EXISTS because a development
build of 0001 briefly made this index itself.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS = [
    "user_id",
    "section_id",
    "category_id",
    "state",
    "closed_at",
    "planned_revenue",
    "planned_cost",
    "probability",
    "created_at",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.create_index(
            "ix_cases_report_month",
            "cases",
            [sa.text("substr(created_at, 1, 7)"), *COLUMNS],
            unique=False,
            if_not_exists=True,
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index("ix_cases_report_month", table_name="cases", if_exists=True)
