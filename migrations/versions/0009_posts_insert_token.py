"""posts.insert_token: what a retried add-post looks for after a lost commit

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 00:30:00

A nullable BIGINT without an index. Every add-post stores a random number in
it; when the connection is lost while the INSERT commits, the retry reads
the user's posts for that number to learn whether the row was stored
(postservice/posts/service.py). Posts stored before hold NULL.

On MariaDB (10.3 and later) the column is added with ALGORITHM=INSTANT: a
change of the table's metadata only, whatever the number of rows; a server
that refuses it is asked for ALGORITHM=INPLACE, LOCK=NONE. On Galera the
ALTER is replicated in total order (TOI) as every DDL is (docs/storage.md).
SQLite adds a nullable column in place.
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy import exc


# revision identifiers, used by Alembic.
revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade():
    bind = op.get_bind()
    if bind.dialect.name in ("mysql", "mariadb"):
        column = "ADD COLUMN insert_token BIGINT NULL"
        try:
            op.execute(f"ALTER TABLE posts {column}, ALGORITHM=INSTANT")
        except exc.DBAPIError:
            # Refused before anything changed: DDL is not transactional here.
            op.execute(f"ALTER TABLE posts {column}, ALGORITHM=INPLACE, LOCK=NONE")
        return
    op.add_column("posts", sa.Column("insert_token", sa.BigInteger(), nullable=True))


def downgrade():
    with op.batch_alter_table(
        "posts", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.drop_column("insert_token")
