"""posts.created_at and posts.updated_at, set by the database

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 22:40:00

Both columns are UTC DATETIMEs in whole seconds with the default
CURRENT_TIMESTAMP, so the database stamps every post it stores.

The posts already stored get the time of this migration in both columns:
when they were written was never recorded, so no truer value exists; a
fixed, non-null value keeps every post in the same wire format (the fields
are required), and it is what the column's default gives them without
rewriting a single row. The order of a listing is by id and does not change.

On MariaDB (10.3 and later) the columns are added with ALGORITHM=INSTANT:
a change of the table's metadata only, whatever the number of rows, and
CURRENT_TIMESTAMP is evaluated once, as the statement runs, for all of them.
A server that refuses INSTANT (older MySQL) is asked for
ALGORITHM=INPLACE, LOCK=NONE: the table is rebuilt while reads and writes
go on. See docs/storage.md for Galera. SQLite copies the table.
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy import exc


# revision identifiers, used by Alembic.
revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

COLUMNS = ("created_at", "updated_at")


def upgrade():
    bind = op.get_bind()
    if bind.dialect.name in ("mysql", "mariadb"):
        # CURRENT_TIMESTAMP in UTC, as the service's own connections have it.
        op.execute("SET SESSION time_zone = '+00:00'")
        columns = ", ".join(
            f"ADD COLUMN {name} DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP"
            for name in COLUMNS
        )
        try:
            op.execute(f"ALTER TABLE posts {columns}, ALGORITHM=INSTANT")
        except exc.DBAPIError:
            # Refused before anything changed: DDL is not transactional here.
            op.execute(f"ALTER TABLE posts {columns}, ALGORITHM=INPLACE, LOCK=NONE")
        return
    # SQLite cannot ADD COLUMN with a non-constant default: copy the table,
    # keeping AUTOINCREMENT (ids of deleted posts are never given again).
    with op.batch_alter_table(
        "posts",
        schema=None,
        recreate="always",
        table_kwargs={"sqlite_autoincrement": True},
    ) as batch_op:
        for name in COLUMNS:
            batch_op.add_column(
                sa.Column(
                    name,
                    sa.DateTime(),
                    server_default=sa.text("CURRENT_TIMESTAMP"),
                    nullable=False,
                )
            )


def downgrade():
    with op.batch_alter_table(
        "posts", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        for name in reversed(COLUMNS):
            batch_op.drop_column(name)
