"""message tree, conversation settings, archive and pin

Messages form a tree (`messages.parent_id`): an edit is a new user message beside an earlier
one, a regeneration a new reply beside another. A conversation continues from its
`active_leaf_id`. Existing conversations become a single path: each message's parent is the
one before it (by `created_at`, `id`), and the leaf is the newest. Imported messages say where
they came from (`imported_from`): no provider was called for them here. Conversations also hold
generation settings (`temperature`, `top_p`, `max_tokens`), and a user's month the spend on
generated titles (`title_requests`, `title_cost_usd`, apart from the replies' totals), and who named them (`title_source`:
existing titles count as the user's, so nothing overwrites them) and `archived`/`pinned`.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 06:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN, not batch mode: on SQLite a batch recreates the table, and dropping
    # the old `conversations` would cascade to every message (foreign keys are on).
    op.add_column("messages", sa.Column("parent_id", sa.Uuid(), nullable=True))
    op.add_column("messages", sa.Column("imported_from", sa.String(32), nullable=True))
    op.create_index(
        "ix_messages_conversation_id_parent_id", "messages", ["conversation_id", "parent_id"]
    )
    op.add_column("conversations", sa.Column("temperature", sa.Double(), nullable=True))
    op.add_column("conversations", sa.Column("top_p", sa.Double(), nullable=True))
    op.add_column("conversations", sa.Column("max_tokens", sa.Integer(), nullable=True))
    op.add_column("conversations", sa.Column("title_source", sa.String(16), nullable=True))
    op.add_column("conversations", sa.Column("active_leaf_id", sa.Uuid(), nullable=True))
    op.add_column(
        "user_monthly_usage",
        sa.Column("title_requests", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column(
        "user_monthly_usage",
        sa.Column("title_cost_usd", sa.Numeric(18, 10), server_default="0", nullable=False),
    )
    for flag in ("archived", "pinned"):
        op.add_column(
            "conversations",
            sa.Column(flag, sa.Boolean(), server_default=sa.false(), nullable=False),
        )
    # Linear history becomes one path: the previous message is the parent.
    op.execute(
        """
        UPDATE messages SET parent_id = (
            SELECT earlier.id FROM messages AS earlier
            WHERE earlier.conversation_id = messages.conversation_id
              AND (earlier.created_at < messages.created_at
                   OR (earlier.created_at = messages.created_at AND earlier.id < messages.id))
            ORDER BY earlier.created_at DESC, earlier.id DESC
            LIMIT 1
        )
        """
    )
    op.execute(
        """
        UPDATE conversations SET active_leaf_id = (
            SELECT newest.id FROM messages AS newest
            WHERE newest.conversation_id = conversations.id
            ORDER BY newest.created_at DESC, newest.id DESC
            LIMIT 1
        ),
        title_source = CASE WHEN title IS NULL THEN NULL ELSE 'user' END
        """
    )


def downgrade() -> None:
    with op.batch_alter_table("user_monthly_usage") as batch:
        batch.drop_column("title_cost_usd")
        batch.drop_column("title_requests")
    with op.batch_alter_table("conversations") as batch:
        for column in (
            "pinned",
            "archived",
            "active_leaf_id",
            "title_source",
            "max_tokens",
            "top_p",
            "temperature",
        ):
            batch.drop_column(column)
    with op.batch_alter_table("messages") as batch:
        batch.drop_index("ix_messages_conversation_id_parent_id")
        batch.drop_column("parent_id")
        batch.drop_column("imported_from")
