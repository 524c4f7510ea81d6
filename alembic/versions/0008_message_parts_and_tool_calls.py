"""message parts, tool calls and reasoning

A message may be more than text: `parts` holds its whole content as OpenAI's content parts
(images, files), `tool_calls` an assistant's function calls, `tool_call_id` the call a tool
message answers, `reasoning` the model's visible thinking and `reasoning_tokens` what it cost.
Messages gain the `tool` role and conversations default `tools`. Every column is nullable or
defaulted, so existing rows stay as they were: text-only messages keep `content` alone.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 06:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ROLE_CHECK = "ck_messages_message_role"


def _roles(*roles: str) -> str:
    return "role IN ({})".format(", ".join(f"'{role}'" for role in roles))


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("parts", JSON_DOCUMENT, nullable=True))
        batch.add_column(sa.Column("tool_calls", JSON_DOCUMENT, nullable=True))
        batch.add_column(sa.Column("tool_call_id", sa.String(255), nullable=True))
        batch.add_column(sa.Column("reasoning", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("reasoning_tokens", sa.Integer(), server_default="0", nullable=False)
        )
        batch.drop_constraint(op.f(ROLE_CHECK), type_="check")
        batch.create_check_constraint(
            "message_role", _roles("user", "assistant", "system", "tool")
        )
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("tools", JSON_DOCUMENT, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("tools")
    op.execute("DELETE FROM messages WHERE role = 'tool'")
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint(op.f(ROLE_CHECK), type_="check")
        batch.create_check_constraint("message_role", _roles("user", "assistant", "system"))
        for column in ("reasoning_tokens", "reasoning", "tool_call_id", "tool_calls", "parts"):
            batch.drop_column(column)
