"""ES runs: a row per told generation, network candidates and their parameter vectors.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-10
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: Union[str, Sequence[str], None] = "0008"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('parameter_vectors',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('network', sa.String(length=64), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('sha256', name=op.f('pk_parameter_vectors'))
    )
    op.create_table('es_generations',
    sa.Column('run_id', sa.String(length=32), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('state', sa.JSON(), nullable=False),
    sa.Column('fitness', sa.JSON(), nullable=False),
    sa.Column('seeds', sa.JSON(), nullable=False),
    sa.Column('env_steps', sa.BigInteger(), nullable=False),
    sa.Column('trainer_seconds', sa.Float(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_es_generations_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'generation', name=op.f('pk_es_generations'))
    )
    with op.batch_alter_table('candidates') as batch:
        batch.add_column(sa.Column('kind', sa.String(length=16), server_default='code', nullable=False))
        batch.add_column(sa.Column('network', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('parameters_sha256', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('es_generation', sa.Integer(), nullable=True))
        batch.create_foreign_key(op.f('fk_candidates_parameters_sha256_parameter_vectors'), 'parameter_vectors',
                                 ['parameters_sha256'], ['sha256'])
        batch.create_check_constraint(op.f('ck_candidates_kind'), "kind IN ('code', 'network')")


def downgrade() -> None:
    with op.batch_alter_table('candidates') as batch:
        batch.drop_constraint(op.f('ck_candidates_kind'), type_='check')
        batch.drop_constraint(op.f('fk_candidates_parameters_sha256_parameter_vectors'), type_='foreignkey')
        batch.drop_column('es_generation')
        batch.drop_column('parameters_sha256')
        batch.drop_column('network')
        batch.drop_column('kind')
    op.drop_table('es_generations')
    op.drop_table('parameter_vectors')
