"""Cost on one axis: each evaluation's environment steps and its share of the trainer's seconds.

Rows recorded before this revision keep NULL (not recorded): what they cost is not known exactly (their
compile and train seconds are the whole batch's, shared with the candidates trained beside them).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: Union[str, Sequence[str], None] = "0009"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('evaluations') as batch:
        batch.add_column(sa.Column('env_steps', sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column('trainer_seconds', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('evaluations') as batch:
        batch.drop_column('trainer_seconds')
        batch.drop_column('env_steps')
