"""outbox.claimed_by: the daemon whose sender holds a claim, released at its next start

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 04:50:00

A sender that dies leaves its claimed mail leased for `[outbound] claim_lease`; the
same daemon starting again releases the claims it holds at once (issue 13 item 7).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(400), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("claimed_by")
