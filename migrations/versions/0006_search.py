"""Search: each candidate's language model, island and early stop, and the run's search settings.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: Union[str, Sequence[str], None] = "0005"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('candidates') as batch:
        batch.add_column(sa.Column('model', sa.String(length=200), nullable=True))
        batch.add_column(sa.Column('island', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('stopped_early', sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('search', sa.JSON(), server_default='{}', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.drop_column('search')
    with op.batch_alter_table('candidates') as batch:
        batch.drop_column('stopped_early')
        batch.drop_column('island')
        batch.drop_column('model')
