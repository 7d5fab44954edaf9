"""Verdicts: scores with their uncertainty against the anchor, verification raced in rounds on fresh seeds.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: Union[str, Sequence[str], None] = "0006"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('best_verdict', sa.String(length=16), nullable=True))
        batch.add_column(sa.Column('confidence', sa.Float(), server_default='0.95', nullable=False))
        batch.add_column(sa.Column('metric', sa.String(length=16), server_default='final', nullable=False))
        batch.add_column(sa.Column('verification_seeds', sa.Integer(), server_default='8', nullable=False))
    # The pooled score mixed the search's selection-biased seeds into the verdict: it is not carried over.
    with op.batch_alter_table('candidates') as batch:
        batch.drop_column('pooled_score')
        batch.add_column(sa.Column('verified_score', sa.Float(), nullable=True))
        batch.add_column(sa.Column('verdict', sa.String(length=16), nullable=True))
        batch.add_column(sa.Column('stats', sa.JSON(), server_default='{}', nullable=False))
    with op.batch_alter_table('evaluations') as batch:
        batch.add_column(sa.Column('round', sa.Integer(), server_default='0', nullable=False))
        batch.add_column(sa.Column('stats', sa.JSON(), nullable=True))
        batch.drop_constraint('uq_evaluations_candidate_id_env_phase', type_='unique')
        batch.create_unique_constraint('uq_evaluations_candidate_id_env_phase_round',
                                       ['candidate_id', 'env', 'phase', 'round'])
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('round', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('round')
    with op.batch_alter_table('evaluations') as batch:
        batch.drop_constraint('uq_evaluations_candidate_id_env_phase_round', type_='unique')
        batch.create_unique_constraint('uq_evaluations_candidate_id_env_phase', ['candidate_id', 'env', 'phase'])
        batch.drop_column('stats')
        batch.drop_column('round')
    with op.batch_alter_table('candidates') as batch:
        batch.drop_column('stats')
        batch.drop_column('verdict')
        batch.drop_column('verified_score')
        batch.add_column(sa.Column('pooled_score', sa.Float(), nullable=True))
    with op.batch_alter_table('runs') as batch:
        batch.drop_column('verification_seeds')
        batch.drop_column('metric')
        batch.drop_column('confidence')
        batch.drop_column('best_verdict')
