"""Artifacts: the traced candidate functions, their hash on candidates and evaluations, outcome `refused`.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

OLD = "outcome IN ('ok', 'invalid', 'error', 'nan', 'timeout', 'memory', 'killed')"
NEW = "outcome IN ('ok', 'invalid', 'error', 'nan', 'timeout', 'memory', 'killed', 'refused')"


def upgrade() -> None:
    op.create_table('artifacts',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('target', sa.String(length=64), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('sha256', name=op.f('pk_artifacts'))
    )
    with op.batch_alter_table('candidates') as batch:
        batch.add_column(sa.Column('artifact_sha256', sa.String(length=64), nullable=True))
        batch.create_foreign_key(op.f('fk_candidates_artifact_sha256_artifacts'), 'artifacts',
                                 ['artifact_sha256'], ['sha256'])
        batch.drop_constraint(op.f('ck_candidates_outcome'), type_='check')
        batch.create_check_constraint(op.f('ck_candidates_outcome'), NEW)
    with op.batch_alter_table('evaluations') as batch:
        batch.add_column(sa.Column('artifact_sha256', sa.String(length=64), nullable=True))
        batch.drop_constraint(op.f('ck_evaluations_outcome'), type_='check')
        batch.create_check_constraint(op.f('ck_evaluations_outcome'), NEW)


def downgrade() -> None:
    with op.batch_alter_table('evaluations') as batch:
        batch.drop_constraint(op.f('ck_evaluations_outcome'), type_='check')
        batch.create_check_constraint(op.f('ck_evaluations_outcome'), OLD)
        batch.drop_column('artifact_sha256')
    with op.batch_alter_table('candidates') as batch:
        batch.drop_constraint(op.f('ck_candidates_outcome'), type_='check')
        batch.create_check_constraint(op.f('ck_candidates_outcome'), OLD)
        batch.drop_constraint(op.f('fk_candidates_artifact_sha256_artifacts'), type_='foreignkey')
        batch.drop_column('artifact_sha256')
    op.drop_table('artifacts')
