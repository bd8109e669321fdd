"""sessions (refresh token families) and suspended accounts

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 10:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'sessions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.Integer(), nullable=False),
        sa.Column('last_used_at', sa.Integer(), nullable=False),
        sa.Column('user_agent', sa.String(length=255), nullable=True),
        sa.Column('refresh_jti', sa.String(length=64), nullable=False),
        sa.Column('refresh_issued_at', sa.Integer(), nullable=False),
        sa.Column('refresh_expires_at', sa.Integer(), nullable=False),
        sa.Column('previous_jti', sa.String(length=64), nullable=True),
        sa.Column('rotated_at', sa.Integer(), nullable=True),
        sa.Column('revoked_at', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_sessions_user_id_users'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_sessions')),
        mysql_charset='utf8mb4',
        mysql_collate='utf8mb4_unicode_ci',
        mysql_engine='InnoDB',
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sessions_user_id'), ['user_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sessions_refresh_expires_at'), ['refresh_expires_at'], unique=False)

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('suspended_at', sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('suspended_at')

    # Its indexes go with it (MySQL refuses to drop the foreign key's alone).
    op.drop_table('sessions')
