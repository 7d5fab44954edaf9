"""A typed job protocol: a proposal's index in its own column, only the job kinds that exist; the
unused `baselines` table goes (baselines are cached by the worker, see workers/baselines.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: Union[str, Sequence[str], None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

OLD_KINDS = "kind IN ('propose', 'evaluate', 'reevaluate', 'metatest', 'finish', 'webhook')"
NEW_KINDS = "kind IN ('propose', 'evaluate', 'reevaluate', 'metatest')"
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('proposal_index', sa.Integer(), nullable=True))
        batch.drop_constraint(op.f('ck_jobs_kind'), type_='check')
        batch.create_check_constraint(op.f('ck_jobs_kind'), NEW_KINDS)
    # The index was the last part of the dedupe key, "propose:<32-character run id>:<index>".
    op.execute("UPDATE jobs SET proposal_index = CAST(SUBSTR(dedupe_key, 42) AS INTEGER) WHERE kind = 'propose'")
    op.drop_table('baselines')


def downgrade() -> None:
    op.create_table('baselines',
    sa.Column('id', BIGINT_ID, autoincrement=True, nullable=False),
    sa.Column('env', sa.String(length=64), nullable=False),
    sa.Column('profile', sa.String(length=64), nullable=False),
    sa.Column('seeds_key', sa.String(length=255), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('random', 'warm_start')", name=op.f('ck_baselines_kind')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_baselines')),
    sa.UniqueConstraint('env', 'profile', 'seeds_key', 'kind', name=op.f('uq_baselines_env_profile_seeds_key_kind'))
    )
    with op.batch_alter_table('jobs') as batch:
        batch.drop_constraint(op.f('ck_jobs_kind'), type_='check')
        batch.create_check_constraint(op.f('ck_jobs_kind'), OLD_KINDS)
        batch.drop_column('proposal_index')
