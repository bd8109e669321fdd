"""mail_outbox, email_tokens and users.email_verified_at

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 00:15:00

Two new tables and one nullable column. Accounts that exist before this
migration have ``email_verified_at`` empty: nothing ever checked their
address. They can ask for a verification mail (``POST
/api/v1/users/me/verify-email``); with ``REQUIRE_VERIFIED_EMAIL=true`` they
must before posting.

On MariaDB adding a nullable column without a default is an INSTANT change
of the table's metadata; SQLite copies the table (batch mode).
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import mysql


# revision identifiers, used by Alembic.
revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TABLE_KWARGS = {
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_unicode_ci",
    "mysql_engine": "InnoDB",
    "sqlite_autoincrement": True,
}
EMAIL_TYPE = sa.String(length=254).with_variant(
    mysql.VARCHAR(254, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
)


def upgrade():
    op.create_table(
        "email_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.Integer(), nullable=False),
        sa.Column("used_at", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_email_tokens_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_email_tokens_token_hash")),
        **TABLE_KWARGS,
    )
    with op.batch_alter_table("email_tokens", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_email_tokens_user_id"), ["user_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_email_tokens_expires_at"), ["expires_at"], unique=False
        )

    op.create_table(
        "mail_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("recipient", EMAIL_TYPE, nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=True),
        sa.Column("body_text", sa.Text(), nullable=True),
        sa.Column("body_html", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.Column("due_at", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("claimed_by", sa.String(length=36), nullable=True),
        sa.Column("last_error", sa.String(length=255), nullable=True),
        sa.Column("failed_at", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mail_outbox")),
        **TABLE_KWARGS,
    )
    with op.batch_alter_table("mail_outbox", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_mail_outbox_due_at"), ["due_at"], unique=False
        )

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("email_verified_at", sa.Integer(), nullable=True)
        )


def downgrade():
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("email_verified_at")
    op.drop_table("mail_outbox")
    # Its indexes go with it (MySQL refuses to drop the foreign key's alone).
    op.drop_table("email_tokens")
