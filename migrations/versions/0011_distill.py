"""Distillation: the `distill` job (a student fitted to a teacher, then evaluated like any candidate).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""
from typing import Sequence, Union

from alembic import op

revision: str = "0011"
down_revision: Union[str, Sequence[str], None] = "0010"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

OLD_KINDS = "kind IN ('propose', 'evaluate', 'reevaluate', 'metatest')"
NEW_KINDS = "kind IN ('propose', 'evaluate', 'reevaluate', 'metatest', 'distill')"


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.drop_constraint(op.f('ck_jobs_kind'), type_='check')
        batch.create_check_constraint(op.f('ck_jobs_kind'), NEW_KINDS)


def downgrade() -> None:
    op.execute("DELETE FROM jobs WHERE kind = 'distill'")
    with op.batch_alter_table('jobs') as batch:
        batch.drop_constraint(op.f('ck_jobs_kind'), type_='check')
        batch.create_check_constraint(op.f('ck_jobs_kind'), OLD_KINDS)
