"""generation leases

A running reply names the process generating it (`messages.generation_owner`), and each
serving process renews a lease row every few seconds (`generation_leases`). A reply whose
owner's lease has lapsed belongs to a process that died or lost the database, and is failed
within seconds, rather than after the ~2 minutes of silence the sweep used to wait for.
Adding a nullable column rewrites nothing: existing rows keep null (judged as before).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 03:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "generation_leases",
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("owner_id", name=op.f("pk_generation_leases")),
    )
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("generation_owner", sa.Uuid(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("generation_owner")
    op.drop_table("generation_leases")
