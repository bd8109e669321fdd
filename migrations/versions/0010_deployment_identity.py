"""the database's identity (its cache namespace) and announced invalidations

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 00:20:00

One row with a random identity: every instance of the deployment derives
its Redis key prefix from it, whatever host it reaches the database by.
A database made by these migrations gets its own value, so two databases
never share a namespace. ``cache_announcements`` holds the invalidations
Redis did not take when their change was made, until an instance delivers
them.
"""
import secrets

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    identity = op.create_table(
        'deployment_identity',
        sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('identity', sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_deployment_identity')),
        mysql_charset='utf8mb4',
        mysql_collate='utf8mb4_unicode_ci',
        mysql_engine='InnoDB',
    )
    op.bulk_insert(identity, [{'id': 1, 'identity': secrets.token_hex(8)}])
    op.create_table(
        'cache_announcements',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_cache_announcements')),
        mysql_charset='utf8mb4',
        mysql_collate='utf8mb4_unicode_ci',
        mysql_engine='InnoDB',
        sqlite_autoincrement=True,
    )


def downgrade():
    op.drop_table('cache_announcements')
    op.drop_table('deployment_identity')
