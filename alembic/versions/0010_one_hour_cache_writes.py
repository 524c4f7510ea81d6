"""one-hour cache writes, apart from the others

Anthropic bills a prompt written to its one-hour cache (`cache_control.ttl: "1h"`) at twice
the input price, against 1.25 times for the five-minute cache. A reply keeps how many of its
`cache_write_tokens` were one-hour writes (`cache_write_1h_tokens`) and the rate they were
charged at (`cache_write_1h_price_per_mtok`), so its cost can still be explained from what is
stored. Replies stored before count none.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 11:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN, not batch mode: on SQLite a batch recreates the table (see 0009).
    op.add_column(
        "messages",
        sa.Column("cache_write_1h_tokens", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column(
        "messages",
        sa.Column(
            "cache_write_1h_price_per_mtok", sa.Numeric(precision=18, scale=10), nullable=True
        ),
    )


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("cache_write_1h_price_per_mtok")
        batch.drop_column("cache_write_1h_tokens")
