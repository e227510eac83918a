"""leases; users' token generation

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 02:50:00

`leases`: one row per job only one instance may do at a time (each `[[mailbox]]`
is polled by one daemon; `intake/lease.py`). `users.token_generation` and
`users.tokens_rotated_at`: `mailgated user rotate-token` invalidates a user's old
reply tokens.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(400), nullable=False),
        sa.Column("holder", sa.String(400), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("token_generation", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("tokens_rotated_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("tokens_rotated_at")
        batch.drop_column("token_generation")
    op.drop_table("leases")
