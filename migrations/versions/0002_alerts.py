"""Collapse detection: alert rules, per-run rule state, alerts and transitions, webhooks, outbox, deliveries.

Revision ID: 0002_alerts
Revises: 0001_core
Create Date: 2026-11-25 15:33:38.901372
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0002_alerts'
down_revision = '0001_core'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('alert_rules',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('params', sa.Text(), nullable=False),
    sa.Column('for_steps', sa.Integer(), nullable=False),
    sa.Column('clear_steps', sa.Integer(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('project', sa.String(length=200), nullable=True),
    sa.Column('run_id', sa.String(length=200), nullable=True),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('builtin', sa.Boolean(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alert_rules'))
    )
    op.create_table('webhooks',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('url', sa.String(length=2000), nullable=False),
    sa.Column('project', sa.String(length=200), nullable=True),
    sa.Column('run_id', sa.String(length=200), nullable=True),
    sa.Column('min_severity', sa.String(length=16), nullable=False),
    sa.Column('format', sa.String(length=16), nullable=False),
    sa.Column('secret', sa.String(length=500), nullable=True),
    sa.Column('description', sa.String(length=200), nullable=True),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhooks'))
    )
    op.create_table('webhook_outbox',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('webhook_id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.String(length=32), nullable=False),
    sa.Column('order_key', sa.String(length=200), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('next_attempt_at', sa.Float(), nullable=False),
    sa.Column('claimed_by', sa.String(length=64), nullable=True),
    sa.Column('claimed_until', sa.Float(), nullable=True),
    sa.Column('delivered_at', sa.Float(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['webhook_id'], ['webhooks.id'], name=op.f('fk_webhook_outbox_webhook_id_webhooks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_outbox'))
    )
    op.create_index(op.f('ix_webhook_outbox_status_next_attempt_at'), 'webhook_outbox', ['status', 'next_attempt_at'], unique=False)
    op.create_index(op.f('ix_webhook_outbox_webhook_id_order_key_id'), 'webhook_outbox', ['webhook_id', 'order_key', 'id'], unique=False)

    op.create_table('alert_rule_state',
    sa.Column('run_pk', sa.Integer(), nullable=False),
    sa.Column('last_step', sa.BigInteger(), nullable=True),
    sa.Column('state', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['run_pk'], ['runs.id'], name=op.f('fk_alert_rule_state_run_pk_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_pk', name=op.f('pk_alert_rule_state'))
    )
    op.create_table('alerts',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('run_pk', sa.Integer(), nullable=False),
    sa.Column('rule_id', sa.String(length=64), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('started_step', sa.BigInteger(), nullable=False),
    sa.Column('started_at', sa.Float(), nullable=False),
    sa.Column('fired_step', sa.BigInteger(), nullable=True),
    sa.Column('fired_at', sa.Float(), nullable=True),
    sa.Column('resolved_step', sa.BigInteger(), nullable=True),
    sa.Column('resolved_at', sa.Float(), nullable=True),
    sa.Column('metric_values', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['run_pk'], ['runs.id'], name=op.f('fk_alerts_run_pk_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alerts'))
    )
    op.create_index(op.f('ix_alerts_run_pk_rule_id'), 'alerts', ['run_pk', 'rule_id'], unique=False)
    op.create_index(op.f('ix_alerts_state'), 'alerts', ['state'], unique=False)

    op.create_table('webhook_deliveries',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('outbox_id', sa.Integer(), nullable=False),
    sa.Column('webhook_id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.String(length=32), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('duration_ms', sa.Float(), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['outbox_id'], ['webhook_outbox.id'], name=op.f('fk_webhook_deliveries_outbox_id_webhook_outbox'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['webhook_id'], ['webhooks.id'], name=op.f('fk_webhook_deliveries_webhook_id_webhooks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_deliveries'))
    )
    op.create_index(op.f('ix_webhook_deliveries_outbox_id'), 'webhook_deliveries', ['outbox_id'], unique=False)
    op.create_index(op.f('ix_webhook_deliveries_webhook_id_id'), 'webhook_deliveries', ['webhook_id', 'id'], unique=False)

    op.create_table('alert_transitions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.String(length=32), nullable=False),
    sa.Column('alert_id', sa.String(length=32), nullable=False),
    sa.Column('run_pk', sa.Integer(), nullable=False),
    sa.Column('rule_id', sa.String(length=64), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('from_state', sa.String(length=16), nullable=True),
    sa.Column('to_state', sa.String(length=16), nullable=False),
    sa.Column('step', sa.BigInteger(), nullable=False),
    sa.Column('step_time', sa.Float(), nullable=True),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('metric_values', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['alert_id'], ['alerts.id'], name=op.f('fk_alert_transitions_alert_id_alerts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_pk'], ['runs.id'], name=op.f('fk_alert_transitions_run_pk_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alert_transitions')),
    sa.UniqueConstraint('event_id', name=op.f('uq_alert_transitions_event_id'))
    )
    op.create_index(op.f('ix_alert_transitions_alert_id'), 'alert_transitions', ['alert_id'], unique=False)
    op.create_index(op.f('ix_alert_transitions_run_pk_id'), 'alert_transitions', ['run_pk', 'id'], unique=False)


def downgrade() -> None:
    for table in (
        "alert_transitions",
        "webhook_deliveries",
        "alerts",
        "alert_rule_state",
        "webhook_outbox",
        "webhooks",
        "alert_rules",
    ):
        # Indexes go with their table (both databases).
        op.drop_table(table)
