"""one generation per conversation, message heartbeat

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 14:23:40.574635
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE messages SET updated_at = created_at")
    # Replies still running when this migrates belong to a stopped deployment: end them, as
    # start-up recovery would, so the one-generation index can be built.
    op.execute(
        "UPDATE messages SET status = 'failed', finish_reason = 'error'"
        " WHERE status = 'in_progress' AND role = 'assistant'"
    )
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_index('ix_messages_in_progress_updated_at', ['updated_at'], unique=False, postgresql_where=sa.text("status = 'in_progress'"), sqlite_where=sa.text("status = 'in_progress'"))
        batch_op.create_index('uq_messages_one_generation_per_conversation', ['conversation_id'], unique=True, postgresql_where=sa.text("status = 'in_progress' AND role = 'assistant'"), sqlite_where=sa.text("status = 'in_progress' AND role = 'assistant'"))



def downgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index('uq_messages_one_generation_per_conversation', postgresql_where=sa.text("status = 'in_progress' AND role = 'assistant'"), sqlite_where=sa.text("status = 'in_progress' AND role = 'assistant'"))
        batch_op.drop_index('ix_messages_in_progress_updated_at', postgresql_where=sa.text("status = 'in_progress'"), sqlite_where=sa.text("status = 'in_progress'"))
        batch_op.drop_column('updated_at')

