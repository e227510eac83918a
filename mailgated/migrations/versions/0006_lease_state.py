"""lease state: a poller's progress travels with its mailbox lease

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 03:20:00

`leases.state`: the holder's poller state (IMAP's UIDVALIDITY and last UID,
POP3's UIDLs), written at each renewal, so an instance taking a dead holder's
mailbox over starts where it stopped instead of fetching the folder again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("leases") as batch:
        batch.add_column(sa.Column("state", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("leases") as batch:
        batch.drop_column("state")
