"""send marks: the loop breaker's sliding windows over all mail we send

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 02:40:00

One row per recipient of each mail queued (issue 12 item 7): the outbox counts
them per address and case, per address, and per causing sender before it
queues more, and holds what goes over the limits.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "send_marks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=True),
        sa.Column("cause", sa.String(length=320), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_send_marks")),
    )
    with op.batch_alter_table("send_marks", schema=None) as batch_op:
        batch_op.create_index("ix_send_marks_address_at", ["address", "at"], unique=False)
        batch_op.create_index("ix_send_marks_cause_at", ["cause", "at"], unique=False)
        batch_op.create_index(batch_op.f("ix_send_marks_at"), ["at"], unique=False)


def downgrade() -> None:
    op.drop_table("send_marks")
