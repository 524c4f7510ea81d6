"""api key change notifications

Every process keeps the callers of recently used API keys in memory
(app/services/access/known_keys.py) and must forget one the moment it is revoked, however that
happens: the CLI, another replica, an operator's own SQL. These triggers send
`NOTIFY api_key_changed, '<key_hash>'` when a key is revoked, re-owned, re-hashed or deleted,
and `'*'` when the table is truncated. Postgres only: SQLite has no NOTIFY, and there the
service does not cache keys.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 04:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# One statement each: asyncpg prepares what it is sent, and a prepared statement is one.
_FUNCTIONS = [
    """CREATE FUNCTION notify_api_key_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('api_key_changed', OLD.key_hash);
    RETURN NULL;
END
$$""",
    """CREATE FUNCTION notify_api_keys_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('api_key_changed', '*');
    RETURN NULL;
END
$$""",
]

# Not on `last_used_at`: every key's use is recorded once a minute, and that changes nothing
# a cached caller depends on.
_TRIGGERS = [
    """CREATE TRIGGER api_key_changed AFTER UPDATE ON api_keys FOR EACH ROW
    WHEN (
        OLD.revoked_at IS DISTINCT FROM NEW.revoked_at
        OR OLD.user_id IS DISTINCT FROM NEW.user_id
        OR OLD.is_admin IS DISTINCT FROM NEW.is_admin
        OR OLD.key_hash IS DISTINCT FROM NEW.key_hash
    )
    EXECUTE FUNCTION notify_api_key_changed()""",
    """CREATE TRIGGER api_key_deleted AFTER DELETE ON api_keys FOR EACH ROW
    EXECUTE FUNCTION notify_api_key_changed()""",
    """CREATE TRIGGER api_keys_truncated AFTER TRUNCATE ON api_keys FOR EACH STATEMENT
    EXECUTE FUNCTION notify_api_keys_truncated()""",
]


def _on_postgres() -> bool:
    return op.get_context().dialect.name == "postgresql"


def upgrade() -> None:
    if not _on_postgres():
        return
    for statement in [*_FUNCTIONS, *_TRIGGERS]:
        op.execute(statement)


def downgrade() -> None:
    if not _on_postgres():
        return
    op.execute("DROP TRIGGER api_keys_truncated ON api_keys")
    op.execute("DROP TRIGGER api_key_deleted ON api_keys")
    op.execute("DROP TRIGGER api_key_changed ON api_keys")
    op.execute("DROP FUNCTION notify_api_keys_truncated()")
    op.execute("DROP FUNCTION notify_api_key_changed()")
