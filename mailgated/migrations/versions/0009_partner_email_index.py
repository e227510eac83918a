"""an index on lower(partners.email), the expression the sender of a new case is found by

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 17:10:00

Processing looks up the sender of every new case by `lower(partners.email)`
(directory.SENDER_BY_EMAIL); with no index on that expression each lookup read the
whole table: with 20,000 partners a message took twice as long to process (issue 15).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_partners_email_lower", "partners", [sa.text("lower(email)")])


def downgrade() -> None:
    op.drop_index("ix_partners_email_lower", table_name="partners")
