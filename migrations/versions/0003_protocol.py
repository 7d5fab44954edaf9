"""The evaluation protocol: meta-test seeds and learning-rate protocol per run, reference candidates,
and how each score was computed.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: Union[str, Sequence[str], None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('metatest_seeds', sa.Integer(), server_default='2', nullable=False))
        # Runs made before this revision chose the best of the grid on the seeds they scored.
        batch.add_column(sa.Column('lr_protocol', sa.String(length=16), server_default='grid', nullable=False))
        batch.create_check_constraint(op.f('ck_runs_lr_protocol'), "lr_protocol IN ('fixed', 'grid')")
    op.execute("UPDATE runs SET metatest_seeds = seeds_per_eval")
    with op.batch_alter_table('candidates') as batch:
        batch.add_column(sa.Column('reference', sa.String(length=64), nullable=True))
    with op.batch_alter_table('evaluations') as batch:
        batch.add_column(sa.Column('score_basis', sa.String(length=16), nullable=True))
        batch.create_check_constraint(op.f('ck_evaluations_score_basis'),
                                      "score_basis IN ('normalised', 'return_ratio')")
    op.execute("UPDATE evaluations SET score_basis = 'normalised' WHERE normalised_score IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table('evaluations') as batch:
        batch.drop_constraint(op.f('ck_evaluations_score_basis'), type_='check')
        batch.drop_column('score_basis')
    with op.batch_alter_table('candidates') as batch:
        batch.drop_column('reference')
    with op.batch_alter_table('runs') as batch:
        batch.drop_constraint(op.f('ck_runs_lr_protocol'), type_='check')
        batch.drop_column('lr_protocol')
        batch.drop_column('metatest_seeds')
