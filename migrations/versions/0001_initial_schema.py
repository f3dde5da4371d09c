"""Initial schema: jobs, callback inbox, normalized results, reconciliation runs.

Revision ID: 0001
Revises: 
Create Date: 2026-11-24 23:30:14.705115
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    
    op.create_table('batches',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('session_config', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_batches')),
    sa.UniqueConstraint('name', name=op.f('uq_batches_name'))
    )
    op.create_table('jobs',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('batch_id', sa.String(length=36), nullable=True),
    sa.Column('source_path', sa.Text(), nullable=False),
    sa.Column('audio_sha256', sa.String(length=64), nullable=True),
    sa.Column('audio_duration_s', sa.Float(), nullable=True),
    sa.Column('audio_channels', sa.Integer(), nullable=True),
    sa.Column('audio_sample_rate', sa.Integer(), nullable=True),
    sa.Column('session_config', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('custom_metadata', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('queued_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('starting_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('streaming_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('stream_closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('processing_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('done_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reconciled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('failed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('gladia_id', sa.String(length=64), nullable=True),
    sa.Column('gladia_created_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ws_url', sa.Text(), nullable=True),
    sa.Column('bytes_total', sa.BigInteger(), nullable=True),
    sa.Column('bytes_sent', sa.BigInteger(), nullable=False),
    sa.Column('bytes_acked', sa.BigInteger(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('reconnects', sa.Integer(), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('worker_id', sa.String(length=200), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('reconcile_after', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("state IN ('queued','starting','streaming','stream_closed','processing','done','reconciled','failed')", name=op.f('ck_jobs_state_valid')),
    sa.ForeignKeyConstraint(['batch_id'], ['batches.id'], name=op.f('fk_jobs_batch_id_batches'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs')),
    sa.UniqueConstraint('gladia_id', name=op.f('uq_jobs_gladia_id'))
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_batch_id_state', ['batch_id', 'state'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_reconcile_after'), ['reconcile_after'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_state'), ['state'], unique=False)
        batch_op.create_index('ix_jobs_state_heartbeat_at', ['state', 'heartbeat_at'], unique=False)

    op.create_table('addon_results',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('gladia_id', sa.String(length=64), nullable=False),
    sa.Column('job_id', sa.String(length=36), nullable=True),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('utterance_id', sa.String(length=64), nullable=False),
    sa.Column('target_language', sa.String(length=16), nullable=False),
    sa.Column('data', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('error', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('translation','named_entity_recognition','sentiment_analysis','summarization','chapterization')", name=op.f('ck_addon_results_kind_valid')),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_addon_results_job_id_jobs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_addon_results')),
    sa.UniqueConstraint('gladia_id', 'kind', 'utterance_id', 'target_language', name=op.f('uq_addon_results_gladia_id_kind_utterance_id_target_language'))
    )
    with op.batch_alter_table('addon_results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_addon_results_job_id'), ['job_id'], unique=False)

    op.create_table('callback_inbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('dedupe_key', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('headers', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.Column('event', sa.String(length=64), nullable=True),
    sa.Column('gladia_id', sa.String(length=64), nullable=True),
    sa.Column('job_id', sa.String(length=36), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('duplicates', sa.Integer(), nullable=False),
    sa.Column('last_duplicate_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('pending','processed','failed','rejected')", name=op.f('ck_callback_inbox_status_valid')),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_callback_inbox_job_id_jobs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_callback_inbox')),
    sa.UniqueConstraint('dedupe_key', name=op.f('uq_callback_inbox_dedupe_key'))
    )
    with op.batch_alter_table('callback_inbox', schema=None) as batch_op:
        batch_op.create_index('ix_callback_inbox_gladia_id_event', ['gladia_id', 'event'], unique=False)
        batch_op.create_index(batch_op.f('ix_callback_inbox_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_callback_inbox_received_at'), ['received_at'], unique=False)
        batch_op.create_index('ix_callback_inbox_status_received_at', ['status', 'received_at'], unique=False)

    op.create_table('concurrency_slots',
    sa.Column('slot', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('job_id', sa.String(length=36), nullable=False),
    sa.Column('acquired_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_concurrency_slots_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('slot', name=op.f('pk_concurrency_slots')),
    sa.UniqueConstraint('job_id', name=op.f('uq_concurrency_slots_job_id'))
    )
    op.create_table('reconciliation_runs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.String(length=36), nullable=True),
    sa.Column('gladia_id', sa.String(length=64), nullable=False),
    sa.Column('trigger', sa.String(length=32), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('expected', sa.Integer(), nullable=False),
    sa.Column('received', sa.Integer(), nullable=False),
    sa.Column('missing', sa.Integer(), nullable=False),
    sa.Column('duplicates', sa.Integer(), nullable=False),
    sa.Column('mismatched', sa.Integer(), nullable=False),
    sa.Column('repaired', sa.Integer(), nullable=False),
    sa.Column('details', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.CheckConstraint("outcome IN ('reconciled','retry','failed')", name=op.f('ck_reconciliation_runs_outcome_valid')),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_reconciliation_runs_job_id_jobs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reconciliation_runs'))
    )
    with op.batch_alter_table('reconciliation_runs', schema=None) as batch_op:
        batch_op.create_index('ix_reconciliation_runs_gladia_id_started_at', ['gladia_id', 'started_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_reconciliation_runs_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_reconciliation_runs_started_at'), ['started_at'], unique=False)

    op.create_table('session_results',
    sa.Column('gladia_id', sa.String(length=64), nullable=False),
    sa.Column('job_id', sa.String(length=36), nullable=True),
    sa.Column('full_transcript', sa.Text(), nullable=True),
    sa.Column('languages', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('audio_duration_s', sa.Float(), nullable=True),
    sa.Column('billing_time_s', sa.Float(), nullable=True),
    sa.Column('transcription_time_s', sa.Float(), nullable=True),
    sa.Column('number_of_channels', sa.Integer(), nullable=True),
    sa.Column('post_transcript', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('post_final_transcript', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('post_final_received_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('gladia_status', sa.String(length=16), nullable=True),
    sa.Column('gladia_error_code', sa.Integer(), nullable=True),
    sa.Column('gladia_completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('gladia_response', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('fetched_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_session_results_job_id_jobs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('gladia_id', name=op.f('pk_session_results'))
    )
    with op.batch_alter_table('session_results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_session_results_job_id'), ['job_id'], unique=False)

    op.create_table('utterances',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('gladia_id', sa.String(length=64), nullable=False),
    sa.Column('job_id', sa.String(length=36), nullable=True),
    sa.Column('utterance_id', sa.String(length=64), nullable=False),
    sa.Column('is_final', sa.Boolean(), nullable=False),
    sa.Column('channel', sa.Integer(), nullable=False),
    sa.Column('start_s', sa.Float(), nullable=False),
    sa.Column('end_s', sa.Float(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('language', sa.String(length=16), nullable=True),
    sa.Column('confidence', sa.Float(), nullable=True),
    sa.Column('words', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('word_count', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("source IN ('callback','websocket','reconcile')", name=op.f('ck_utterances_source_valid')),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_utterances_job_id_jobs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_utterances')),
    sa.UniqueConstraint('gladia_id', 'utterance_id', name=op.f('uq_utterances_gladia_id_utterance_id'))
    )
    with op.batch_alter_table('utterances', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_utterances_job_id'), ['job_id'], unique=False)

    op.create_table('events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('gladia_id', sa.String(length=64), nullable=False),
    sa.Column('job_id', sa.String(length=36), nullable=True),
    sa.Column('message_key', sa.String(length=64), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('inbox_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('payload', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.CheckConstraint("source IN ('callback','websocket','reconcile')", name=op.f('ck_events_source_valid')),
    sa.ForeignKeyConstraint(['inbox_id'], ['callback_inbox.id'], name=op.f('fk_events_inbox_id_callback_inbox'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_events_job_id_jobs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_events')),
    sa.UniqueConstraint('gladia_id', 'message_key', name=op.f('uq_events_gladia_id_message_key'))
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_gladia_id_type', ['gladia_id', 'type'], unique=False)
        batch_op.create_index(batch_op.f('ix_events_job_id'), ['job_id'], unique=False)
        batch_op.create_index('ix_events_received_at', ['received_at'], unique=False)

    


def downgrade() -> None:
    
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_received_at')
        batch_op.drop_index(batch_op.f('ix_events_job_id'))
        batch_op.drop_index('ix_events_gladia_id_type')

    op.drop_table('events')
    with op.batch_alter_table('utterances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_utterances_job_id'))

    op.drop_table('utterances')
    with op.batch_alter_table('session_results', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_session_results_job_id'))

    op.drop_table('session_results')
    with op.batch_alter_table('reconciliation_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reconciliation_runs_started_at'))
        batch_op.drop_index(batch_op.f('ix_reconciliation_runs_job_id'))
        batch_op.drop_index('ix_reconciliation_runs_gladia_id_started_at')

    op.drop_table('reconciliation_runs')
    op.drop_table('concurrency_slots')
    with op.batch_alter_table('callback_inbox', schema=None) as batch_op:
        batch_op.drop_index('ix_callback_inbox_status_received_at')
        batch_op.drop_index(batch_op.f('ix_callback_inbox_received_at'))
        batch_op.drop_index(batch_op.f('ix_callback_inbox_job_id'))
        batch_op.drop_index('ix_callback_inbox_gladia_id_event')

    op.drop_table('callback_inbox')
    with op.batch_alter_table('addon_results', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_addon_results_job_id'))

    op.drop_table('addon_results')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_state_heartbeat_at')
        batch_op.drop_index(batch_op.f('ix_jobs_state'))
        batch_op.drop_index(batch_op.f('ix_jobs_reconcile_after'))
        batch_op.drop_index(batch_op.f('ix_jobs_created_at'))
        batch_op.drop_index('ix_jobs_batch_id_state')

    op.drop_table('jobs')
    op.drop_table('batches')
    
