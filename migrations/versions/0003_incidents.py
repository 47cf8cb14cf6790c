"""Incidents: one row per run episode (grouped alerts, the story, notification bookkeeping) and its members.

Alerts that fired before this revision belong to no incident; the next alert of their run opens one.

Revision ID: 0003_incidents
Revises: 0002_alerts
Create Date: 2026-12-02 03:10:00.000000
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0003_incidents'
down_revision = '0002_alerts'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('incidents',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('run_pk', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('opened_step', sa.BigInteger(), nullable=False),
    sa.Column('opened_at', sa.Float(), nullable=False),
    sa.Column('resolved_step', sa.BigInteger(), nullable=True),
    sa.Column('resolved_at', sa.Float(), nullable=True),
    sa.Column('reopened', sa.Integer(), nullable=False),
    sa.Column('story', sa.Text(), nullable=False),
    sa.Column('firing_alerts', sa.Text(), nullable=False),
    sa.Column('changed_at', sa.Float(), nullable=True),
    sa.Column('next_due_at', sa.Float(), nullable=True),
    sa.Column('notified_state', sa.String(length=16), nullable=True),
    sa.Column('notified_severity', sa.String(length=16), nullable=True),
    sa.Column('last_notified_at', sa.Float(), nullable=True),
    sa.Column('notifications', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['run_pk'], ['runs.id'], name=op.f('fk_incidents_run_pk_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_incidents'))
    )
    op.create_index(op.f('ix_incidents_run_pk_opened_step'), 'incidents', ['run_pk', 'opened_step'], unique=False)
    op.create_index(op.f('ix_incidents_state'), 'incidents', ['state'], unique=False)
    op.create_index(op.f('ix_incidents_next_due_at'), 'incidents', ['next_due_at'], unique=False)

    op.create_table('incident_alerts',
    sa.Column('incident_id', sa.String(length=32), nullable=False),
    sa.Column('alert_id', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['alert_id'], ['alerts.id'], name=op.f('fk_incident_alerts_alert_id_alerts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name=op.f('fk_incident_alerts_incident_id_incidents'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('incident_id', 'alert_id', name=op.f('pk_incident_alerts'))
    )
    op.create_index(op.f('ix_incident_alerts_alert_id'), 'incident_alerts', ['alert_id'], unique=False)


def downgrade() -> None:
    for table in ("incident_alerts", "incidents"):
        # Indexes go with their table (both databases).
        op.drop_table(table)
