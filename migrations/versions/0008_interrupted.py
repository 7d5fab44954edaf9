"""Interrupted runs (a Ctrl-C'd `discovery run`, resumed by `discovery runs resume`), their event, and the
trainer's platform and device on every evaluation.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: Union[str, Sequence[str], None] = "0007"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

OLD_STATUSES = "status IN ('queued', 'running', 'completing', 'completed', 'failed', 'cancelled')"
NEW_STATUSES = "status IN ('queued', 'running', 'completing', 'completed', 'failed', 'cancelled', 'interrupted')"
OLD_EVENTS = ("type IN ('run.started', 'candidate.proposed', 'candidate.evaluated', 'candidate.new_best', "
              "'run.completed', 'run.failed', 'run.cancelled')")
NEW_EVENTS = ("type IN ('run.started', 'candidate.proposed', 'candidate.evaluated', 'candidate.new_best', "
              "'run.completed', 'run.failed', 'run.cancelled', 'run.interrupted')")


def upgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        batch.drop_constraint(op.f('ck_runs_status'), type_='check')
        batch.create_check_constraint(op.f('ck_runs_status'), NEW_STATUSES)
    with op.batch_alter_table('events') as batch:
        batch.drop_constraint(op.f('ck_events_type'), type_='check')
        batch.create_check_constraint(op.f('ck_events_type'), NEW_EVENTS)
    with op.batch_alter_table('evaluations') as batch:
        batch.add_column(sa.Column('platform', sa.String(length=16), nullable=True))
        batch.add_column(sa.Column('device', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('evaluations') as batch:
        batch.drop_column('device')
        batch.drop_column('platform')
    op.execute("DELETE FROM events WHERE type = 'run.interrupted'")
    with op.batch_alter_table('events') as batch:
        batch.drop_constraint(op.f('ck_events_type'), type_='check')
        batch.create_check_constraint(op.f('ck_events_type'), OLD_EVENTS)
    # An interrupted run goes back to what the older schema had for it: running (a crashed run resumes).
    op.execute("UPDATE runs SET status = 'running' WHERE status = 'interrupted'")
    with op.batch_alter_table('runs') as batch:
        batch.drop_constraint(op.f('ck_runs_status'), type_='check')
        batch.create_check_constraint(op.f('ck_runs_status'), OLD_STATUSES)
