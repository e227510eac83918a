"""outbox per-recipient results

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 02:50:00

A mail to several recipients can be accepted for some, refused for others and
deferred for the rest (issue 12 item 4): `results` keeps the final answer per
recipient (the relay's 250, a 5xx, or why we refused to send), so a retry goes
only to those still waiting and an operator sees who got it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("results", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("results")
