"""upgrade_tasks: the one-off tasks of an upgrade that have run

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 23:00:00

One row per task done (``tokens import-legacy``: the logouts 1.x kept in
Redis, copied into revoked_tokens), so that a later start may go on without
Redis: what had to be carried over was. A new table, empty: nothing is
locked on a large database, and on Galera the CREATE is replicated in total
order as every DDL is.
"""

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'upgrade_tasks',
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('done_at', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_upgrade_tasks')),
        mysql_charset='utf8mb4',
        mysql_collate='utf8mb4_unicode_ci',
        mysql_engine='InnoDB',
    )


def downgrade():
    op.drop_table('upgrade_tasks')
