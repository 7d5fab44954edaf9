"""Initial schema: keys, runs, candidates, evaluations, baselines, jobs, LLM calls, events, webhooks.

Hand-checked on PostgreSQL and SQLite (tests/db). The two foreign keys that close cycles
(runs.best_candidate_id -> candidates, llm_calls.candidate_id -> candidates) are added after the
tables exist, in batch mode so that SQLite can add them by copying the table.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# BIGINT on PostgreSQL; INTEGER on SQLite, where only "INTEGER PRIMARY KEY" autoincrements.
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('api_keys',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_api_keys_key_hash'))
    )
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
    op.create_table('runs',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('owner_key_id', sa.String(length=32), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('target', sa.String(length=64), nullable=False),
    sa.Column('train_envs', sa.JSON(), nullable=False),
    sa.Column('test_envs', sa.JSON(), nullable=False),
    sa.Column('profile', sa.String(length=64), nullable=False),
    sa.Column('proposer', sa.JSON(), nullable=False),
    sa.Column('budget', sa.JSON(), nullable=False),
    sa.Column('concurrency', sa.Integer(), nullable=False),
    sa.Column('seed', sa.BigInteger(), nullable=False),
    sa.Column('seeds_per_eval', sa.Integer(), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('best_candidate_id', sa.String(length=32), nullable=True),
    sa.Column('best_score', sa.Float(), nullable=True),
    sa.Column('tokens_used', sa.BigInteger(), nullable=False),
    sa.Column('cost_usd', sa.Float(), nullable=False),
    sa.Column('duplicates_skipped', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('idempotency_key', sa.String(length=255), nullable=True),
    sa.Column('request_hash', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('queued', 'running', 'completing', 'completed', 'failed', 'cancelled')", name=op.f('ck_runs_status')),
    sa.ForeignKeyConstraint(['owner_key_id'], ['api_keys.id'], name=op.f('fk_runs_owner_key_id_api_keys')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_runs')),
    sa.UniqueConstraint('owner_key_id', 'idempotency_key', name=op.f('uq_runs_owner_key_id_idempotency_key'))
    )
    op.create_index('ix_runs_owner_key_id_created_at', 'runs', ['owner_key_id', 'created_at'], unique=False)
    op.create_index('ix_runs_status', 'runs', ['status'], unique=False)
    op.create_table('events',
    sa.Column('id', BIGINT_ID, autoincrement=True, nullable=False),
    sa.Column('run_id', sa.String(length=32), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("type IN ('run.started', 'candidate.proposed', 'candidate.evaluated', 'candidate.new_best', 'run.completed', 'run.failed', 'run.cancelled')", name=op.f('ck_events_type')),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_events_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_events'))
    )
    op.create_index('ix_events_run_id_id', 'events', ['run_id', 'id'], unique=False)
    op.create_table('llm_calls',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('run_id', sa.String(length=32), nullable=False),
    sa.Column('candidate_id', sa.String(length=32), nullable=True),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('messages', sa.JSON(), nullable=False),
    sa.Column('reply', sa.Text(), nullable=True),
    sa.Column('prompt_tokens', sa.Integer(), nullable=True),
    sa.Column('completion_tokens', sa.Integer(), nullable=True),
    sa.Column('latency_ms', sa.Float(), nullable=True),
    sa.Column('cost_usd', sa.Float(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_llm_calls_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_llm_calls'))
    )
    op.create_index('ix_llm_calls_run_id_created_at', 'llm_calls', ['run_id', 'created_at'], unique=False)
    op.create_table('webhook_endpoints',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('run_id', sa.String(length=32), nullable=True),
    sa.Column('owner_key_id', sa.String(length=32), nullable=True),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('secret', sa.String(length=255), nullable=False),
    sa.Column('events', sa.JSON(), nullable=False),
    sa.Column('disabled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_key_id'], ['api_keys.id'], name=op.f('fk_webhook_endpoints_owner_key_id_api_keys')),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_webhook_endpoints_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_endpoints'))
    )
    op.create_index('ix_webhook_endpoints_owner_key_id', 'webhook_endpoints', ['owner_key_id'], unique=False)
    op.create_index('ix_webhook_endpoints_run_id', 'webhook_endpoints', ['run_id'], unique=False)
    op.create_table('candidates',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('run_id', sa.String(length=32), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('is_warm_start', sa.Boolean(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('thought', sa.Text(), nullable=False),
    sa.Column('code', sa.Text(), nullable=False),
    sa.Column('parent_ids', sa.JSON(), nullable=False),
    sa.Column('ast_hash', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=True),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('pooled_score', sa.Float(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('llm_call_id', sa.String(length=32), nullable=True),
    sa.Column('propose_seconds', sa.Float(), nullable=True),
    sa.Column('eval_seconds', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('evaluated_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("outcome IN ('ok', 'invalid', 'error', 'nan', 'timeout', 'memory', 'killed')", name=op.f('ck_candidates_outcome')),
    sa.CheckConstraint("status IN ('pending', 'evaluating', 'evaluated', 'failed')", name=op.f('ck_candidates_status')),
    sa.ForeignKeyConstraint(['llm_call_id'], ['llm_calls.id'], name=op.f('fk_candidates_llm_call_id_llm_calls'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_candidates_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_candidates')),
    sa.UniqueConstraint('run_id', 'ast_hash', name=op.f('uq_candidates_run_id_ast_hash')),
    sa.UniqueConstraint('run_id', 'index', name=op.f('uq_candidates_run_id_index'))
    )
    op.create_index('ix_candidates_run_id_created_at', 'candidates', ['run_id', 'created_at'], unique=False)
    op.create_index('ix_candidates_run_id_score', 'candidates', ['run_id', 'score'], unique=False)
    op.create_table('webhook_deliveries',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('endpoint_id', sa.String(length=32), nullable=False),
    sa.Column('event_id', BIGINT_ID, nullable=False),
    sa.Column('message_id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_status_code', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'delivering', 'delivered', 'failed')", name=op.f('ck_webhook_deliveries_status')),
    sa.ForeignKeyConstraint(['endpoint_id'], ['webhook_endpoints.id'], name=op.f('fk_webhook_deliveries_endpoint_id_webhook_endpoints'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], name=op.f('fk_webhook_deliveries_event_id_events'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_deliveries')),
    sa.UniqueConstraint('endpoint_id', 'event_id', name=op.f('uq_webhook_deliveries_endpoint_id_event_id')),
    sa.UniqueConstraint('message_id', name=op.f('uq_webhook_deliveries_message_id'))
    )
    op.create_index('ix_webhook_deliveries_event_id', 'webhook_deliveries', ['event_id'], unique=False)
    op.create_index('ix_webhook_deliveries_status_next_attempt_at', 'webhook_deliveries', ['status', 'next_attempt_at'], unique=False)
    op.create_table('evaluations',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('candidate_id', sa.String(length=32), nullable=False),
    sa.Column('env', sa.String(length=64), nullable=False),
    sa.Column('phase', sa.String(length=16), nullable=False),
    sa.Column('seeds', sa.JSON(), nullable=False),
    sa.Column('learning_rates', sa.JSON(), nullable=False),
    sa.Column('returns', sa.JSON(), nullable=True),
    sa.Column('curves', sa.JSON(), nullable=True),
    sa.Column('best_lr', sa.Float(), nullable=True),
    sa.Column('final_return', sa.Float(), nullable=True),
    sa.Column('normalised_score', sa.Float(), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('compile_seconds', sa.Float(), nullable=True),
    sa.Column('train_seconds', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("outcome IN ('ok', 'invalid', 'error', 'nan', 'timeout', 'memory', 'killed')", name=op.f('ck_evaluations_outcome')),
    sa.CheckConstraint("phase IN ('train', 'reeval', 'test')", name=op.f('ck_evaluations_phase')),
    sa.ForeignKeyConstraint(['candidate_id'], ['candidates.id'], name=op.f('fk_evaluations_candidate_id_candidates'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_evaluations')),
    sa.UniqueConstraint('candidate_id', 'env', 'phase', name=op.f('uq_evaluations_candidate_id_env_phase'))
    )
    op.create_table('jobs',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('run_id', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('candidate_id', sa.String(length=32), nullable=True),
    sa.Column('env', sa.String(length=64), nullable=True),
    sa.Column('dedupe_key', sa.String(length=255), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('lease_owner', sa.String(length=255), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.CheckConstraint("kind IN ('propose', 'evaluate', 'reevaluate', 'metatest', 'finish', 'webhook')", name=op.f('ck_jobs_kind')),
    sa.CheckConstraint("status IN ('pending', 'claimed', 'done', 'failed')", name=op.f('ck_jobs_status')),
    sa.ForeignKeyConstraint(['candidate_id'], ['candidates.id'], name=op.f('fk_jobs_candidate_id_candidates'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_jobs_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs')),
    sa.UniqueConstraint('dedupe_key', name=op.f('uq_jobs_dedupe_key'))
    )
    op.create_index('ix_jobs_run_id', 'jobs', ['run_id'], unique=False)
    op.create_index('ix_jobs_status_lease_until', 'jobs', ['status', 'lease_until'], unique=False)
    op.create_table('webhook_attempts',
    sa.Column('id', BIGINT_ID, autoincrement=True, nullable=False),
    sa.Column('delivery_id', sa.String(length=32), nullable=False),
    sa.Column('attempted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('latency_ms', sa.Float(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['delivery_id'], ['webhook_deliveries.id'], name=op.f('fk_webhook_attempts_delivery_id_webhook_deliveries'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_attempts'))
    )
    op.create_index('ix_webhook_attempts_delivery_id', 'webhook_attempts', ['delivery_id'], unique=False)

    # Foreign keys that close cycles through candidates.
    with op.batch_alter_table("runs") as batch_op:
        batch_op.create_foreign_key(
            op.f("fk_runs_best_candidate_id_candidates"), "candidates", ["best_candidate_id"], ["id"],
            ondelete="SET NULL",
        )
    with op.batch_alter_table("llm_calls") as batch_op:
        batch_op.create_foreign_key(
            op.f("fk_llm_calls_candidate_id_candidates"), "candidates", ["candidate_id"], ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("llm_calls") as batch_op:
        batch_op.drop_constraint(op.f("fk_llm_calls_candidate_id_candidates"), type_="foreignkey")
    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_constraint(op.f("fk_runs_best_candidate_id_candidates"), type_="foreignkey")
    op.drop_index('ix_webhook_attempts_delivery_id', table_name='webhook_attempts')
    op.drop_table('webhook_attempts')
    op.drop_index('ix_jobs_status_lease_until', table_name='jobs')
    op.drop_index('ix_jobs_run_id', table_name='jobs')
    op.drop_table('jobs')
    op.drop_table('evaluations')
    op.drop_index('ix_webhook_deliveries_status_next_attempt_at', table_name='webhook_deliveries')
    op.drop_index('ix_webhook_deliveries_event_id', table_name='webhook_deliveries')
    op.drop_table('webhook_deliveries')
    op.drop_index('ix_candidates_run_id_score', table_name='candidates')
    op.drop_index('ix_candidates_run_id_created_at', table_name='candidates')
    op.drop_table('candidates')
    op.drop_index('ix_webhook_endpoints_run_id', table_name='webhook_endpoints')
    op.drop_index('ix_webhook_endpoints_owner_key_id', table_name='webhook_endpoints')
    op.drop_table('webhook_endpoints')
    op.drop_index('ix_llm_calls_run_id_created_at', table_name='llm_calls')
    op.drop_table('llm_calls')
    op.drop_index('ix_events_run_id_id', table_name='events')
    op.drop_table('events')
    op.drop_index('ix_runs_status', table_name='runs')
    op.drop_index('ix_runs_owner_key_id_created_at', table_name='runs')
    op.drop_table('runs')
    op.drop_table('baselines')
    op.drop_table('api_keys')
