"""reply prices and user monthly usage

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 14:15:31.466937
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('user_monthly_usage',
    sa.Column('user_id', sa.String(length=255), nullable=False),
    sa.Column('month', sa.String(length=7), nullable=False),
    sa.Column('requests', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('prompt_tokens', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('completion_tokens', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('cached_tokens', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('cost_usd', sa.Numeric(precision=18, scale=10), server_default=sa.text('0'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('cost_usd >= 0', name=op.f('ck_user_monthly_usage_usage_cost_non_negative')),
    sa.PrimaryKeyConstraint('user_id', 'month', name=op.f('pk_user_monthly_usage'))
    )
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cache_write_tokens', sa.Integer(), server_default=sa.text('0'), nullable=False))
        batch_op.add_column(sa.Column('input_price_per_mtok', sa.Numeric(precision=18, scale=10), nullable=True))
        batch_op.add_column(sa.Column('cached_input_price_per_mtok', sa.Numeric(precision=18, scale=10), nullable=True))
        batch_op.add_column(sa.Column('cache_write_price_per_mtok', sa.Numeric(precision=18, scale=10), nullable=True))
        batch_op.add_column(sa.Column('output_price_per_mtok', sa.Numeric(precision=18, scale=10), nullable=True))
        batch_op.add_column(sa.Column('price_source', sa.String(length=64), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('price_source')
        batch_op.drop_column('output_price_per_mtok')
        batch_op.drop_column('cache_write_price_per_mtok')
        batch_op.drop_column('cached_input_price_per_mtok')
        batch_op.drop_column('input_price_per_mtok')
        batch_op.drop_column('cache_write_tokens')

    op.drop_table('user_monthly_usage')
