"""posts.version: a count of the post's edits, for its ETag

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 00:30:00

Every post starts at version 1 and an edit adds one, in the same UPDATE as
its new text. A post's ETag and the tags of the listings that hold it
follow from (id, version): updated_at, in whole seconds, cannot tell two
edits in one second apart.

The posts already stored get 1, the column's constant default: none of them
was ever edited. On MariaDB (10.3 and later) the column is added with
ALGORITHM=INSTANT, a change of metadata only whatever the number of rows,
so neither a large table nor a Galera cluster is held up; a server that
refuses INSTANT is asked for ALGORITHM=INPLACE, LOCK=NONE. SQLite adds the
column in place (ALTER TABLE ... ADD COLUMN with a constant default).
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy import exc


# revision identifiers, used by Alembic.
revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COLUMN = "ADD COLUMN version INTEGER NOT NULL DEFAULT 1"


def upgrade():
    bind = op.get_bind()
    if bind.dialect.name in ("mysql", "mariadb"):
        try:
            op.execute(f"ALTER TABLE posts {COLUMN}, ALGORITHM=INSTANT")
        except exc.DBAPIError:
            # Refused before anything changed: DDL is not transactional here.
            op.execute(f"ALTER TABLE posts {COLUMN}, ALGORITHM=INPLACE, LOCK=NONE")
        return
    op.add_column(
        "posts",
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
    )


def downgrade():
    with op.batch_alter_table(
        "posts", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.drop_column("version")
