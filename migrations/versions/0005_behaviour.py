"""Behaviour: each candidate's probe fingerprint and the candidate it duplicates, the evolution operator
that made it, and the run's count of children rejected before training, by operator.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: Union[str, Sequence[str], None] = "0004"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('candidates') as batch:
        batch.add_column(sa.Column('fingerprint', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('duplicate_of', sa.String(length=32), nullable=True))
        batch.add_column(sa.Column('operator', sa.String(length=32), nullable=True))
        batch.create_foreign_key(op.f('fk_candidates_duplicate_of_candidates'), 'candidates', ['duplicate_of'],
                                 ['id'], ondelete='SET NULL')
        batch.create_index('ix_candidates_run_id_fingerprint', ['run_id', 'fingerprint'])
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('operator_attempts', sa.JSON(), server_default='{}', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.drop_column('operator_attempts')
    with op.batch_alter_table('candidates') as batch:
        batch.drop_index('ix_candidates_run_id_fingerprint')
        batch.drop_constraint(op.f('fk_candidates_duplicate_of_candidates'), type_='foreignkey')
        batch.drop_column('operator')
        batch.drop_column('duplicate_of')
        batch.drop_column('fingerprint')
