"""The database tables: users, their sessions and their posts, the mail
waiting to be sent with the single-use tokens it carries, and the
database's identity and announced cache invalidations."""

import secrets
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    event,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Mapped, mapped_column

from postservice.extensions import db

# MySQL TEXT holds 65,535 bytes; a post may hold 1 MiB.
POST_TEXT_TYPE = Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
# Emails are normalised before they are stored, so they are compared byte for
# byte; a case- or accent-insensitive collation would make distinct
# addresses collide on MySQL only.
EMAIL_TYPE = String(254).with_variant(
    mysql.VARCHAR(254, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
)
IDEMPOTENCY_KEY_MAX_CHARS = 255
# Keys are compared byte for byte, like emails.
IDEMPOTENCY_KEY_TYPE = String(IDEMPOTENCY_KEY_MAX_CHARS).with_variant(
    mysql.VARCHAR(
        IDEMPOTENCY_KEY_MAX_CHARS, charset="utf8mb4", collation="utf8mb4_bin"
    ),
    "mysql",
    "mariadb",
)
TABLE_ARGS = {
    # Emoji are four bytes; MySQL's legacy utf8 and latin1 cannot store them.
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_unicode_ci",
    "mysql_engine": "InnoDB",
    # SQLite would otherwise hand a deleted row's id to the next row: a new
    # user would inherit the old one's cache entries, a new post an old link.
    "sqlite_autoincrement": True,
}
ID_MAX = 2**31 - 1  # the largest INTEGER id on every backend
# Set by the database when a row is stored, in UTC and whole seconds on every
# backend: SQLite's CURRENT_TIMESTAMP is UTC, and MySQL's connections are set
# to UTC (``db.engines``); a DATETIME without a precision holds whole seconds.
STORED_AT = text("CURRENT_TIMESTAMP")


class User(db.Model):
    __tablename__ = "users"
    __table_args__ = TABLE_ARGS

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(EMAIL_TYPE, unique=True)
    password_hash: Mapped[str] = mapped_column(String(60))
    # Every token carries the version it was issued under (claim ``ver``);
    # raising it voids them all at once: change of password, log out everywhere.
    token_version: Mapped[int] = mapped_column(Integer, server_default="0")
    # When an operator suspended the account (Unix seconds, UTC), or None.
    # Its tokens, refresh and login answer 403 meanwhile; nothing is deleted.
    suspended_at: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # When the owner proved the address theirs (Unix seconds, UTC): a link of
    # a verification mail, or a password reset, which is mailed there too.
    email_verified_at: Mapped[int | None] = mapped_column(Integer, nullable=True)

    @property
    def email_verified(self):
        return self.email_verified_at is not None


class Post(db.Model):
    __tablename__ = "posts"
    __table_args__ = TABLE_ARGS

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    text: Mapped[str] = mapped_column(POST_TEXT_TYPE)
    # UTC, naive, whole seconds. Posts stored before these columns existed
    # have the time of the migration in both (migration 0006).
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=STORED_AT)
    updated_at: Mapped[datetime] = mapped_column(DateTime, server_default=STORED_AT)
    # 1 when stored, one more with every edit: the post's ETag (posts.tags).
    version: Mapped[int] = mapped_column(server_default="1")
    # A random number each add-post stores with the row, so that a retry
    # after a commit whose answer was lost can find out whether the row was
    # stored (``posts.service``). Not indexed: the lookup is rare and goes
    # through the user's posts; None on posts stored before migration 0009.
    insert_token: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


USER_AGENT_MAX_CHARS = 255


class UserSession(db.Model):
    """A login and the refresh tokens that follow from it (a token family).

    One refresh token of the session is current; refreshing with it replaces
    it (rotation). The one it replaced is remembered with the time of the
    rotation, so a client that refreshed twice at once is answered the same
    new token, and a rotated token that comes back later revokes the session.
    Access tokens carry the session's id (claim ``sid``) and are void once it
    is revoked. Times are Unix seconds (UTC).
    """

    __tablename__ = "sessions"
    __table_args__ = TABLE_ARGS

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[int] = mapped_column(Integer)
    # The last login or refresh; requests with access tokens do not write it.
    last_used_at: Mapped[int] = mapped_column(Integer)
    user_agent: Mapped[str | None] = mapped_column(
        String(USER_AGENT_MAX_CHARS), nullable=True
    )
    # The current refresh token: what is needed to issue it again, identical.
    refresh_jti: Mapped[str] = mapped_column(String(64))
    refresh_issued_at: Mapped[int] = mapped_column(Integer)
    refresh_expires_at: Mapped[int] = mapped_column(Integer, index=True)
    # The refresh token it replaced, and when.
    previous_jti: Mapped[str | None] = mapped_column(String(64), nullable=True)
    rotated_at: Mapped[int | None] = mapped_column(Integer, nullable=True)
    revoked_at: Mapped[int | None] = mapped_column(Integer, nullable=True)


class RevokedToken(db.Model):
    """A token logged out before it expired: the source of truth for revocation.

    Redis only caches the verdicts read from here, so a revocation outlives
    eviction, a flush or a restart of Redis. ``user_id`` is empty for
    revocations carried over from the Redis-only layout, which did not record
    whose token it was.
    """

    __tablename__ = "revoked_tokens"
    __table_args__ = {
        key: value for key, value in TABLE_ARGS.items() if key != "sqlite_autoincrement"
    }

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    # When the token expires on its own (Unix seconds); the row can go then.
    expires_at: Mapped[int] = mapped_column(Integer, index=True)


class IdempotencyKey(db.Model):
    """An add-post answered under a client's ``Idempotency-Key``.

    Written in the transaction that stores the post, so a key is never
    recorded for a post that was not, nor a post stored twice for one key.
    """

    __tablename__ = "idempotency_keys"
    # No ids are generated here: the key is the client's.
    __table_args__ = {
        k: v for k, v in TABLE_ARGS.items() if k != "sqlite_autoincrement"
    }

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    )
    idempotency_key: Mapped[str] = mapped_column(IDEMPOTENCY_KEY_TYPE, primary_key=True)
    # SHA-256 of the text: a key reused for another text is refused.
    request_hash: Mapped[str] = mapped_column(String(64))
    post_id: Mapped[int]
    # Unix time; the key holds for a day. Indexed for ``flask posts purge-keys``.
    created_at: Mapped[int] = mapped_column(index=True)


class EmailToken(db.Model):
    """A single-use token sent by mail: a password reset or an email check.

    Only the SHA-256 of the token is kept: whoever reads this table cannot
    use what it holds. A token is good until ``expires_at`` and only while
    ``used_at`` is empty.
    """

    __tablename__ = "email_tokens"
    __table_args__ = TABLE_ARGS

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    # "password_reset" or "verify_email": a token is good for one purpose.
    purpose: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[int] = mapped_column(Integer, index=True)
    used_at: Mapped[int | None] = mapped_column(Integer, nullable=True)


MAIL_SUBJECT_MAX_CHARS = 255
MAIL_ERROR_MAX_CHARS = 255
# A rendered mail is a few kilobytes; TEXT (64 KiB on MySQL) holds it.
MAIL_BODY_TYPE = Text()


class OutboxMail(db.Model):
    """A mail to send: written in the transaction of what it tells about.

    A row is either rendered (``subject`` and bodies set: a verification
    mail, written with its token) or a request still to be prepared by the
    worker (a password reset, whose account is looked up there, so that the
    request does the same work for every email). ``due_at`` is when a worker
    may next take it; taking it moves ``due_at`` a lease ahead and names the
    worker in ``claimed_by``, so two workers never hold it at once, and a
    worker that died lets it go when the lease runs out. A sent mail's row
    is deleted; one that kept failing stays with ``failed_at`` set.
    """

    __tablename__ = "mail_outbox"
    __table_args__ = TABLE_ARGS

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str] = mapped_column(EMAIL_TYPE)
    subject: Mapped[str | None] = mapped_column(
        String(MAIL_SUBJECT_MAX_CHARS), nullable=True
    )
    body_text: Mapped[str | None] = mapped_column(MAIL_BODY_TYPE, nullable=True)
    body_html: Mapped[str | None] = mapped_column(MAIL_BODY_TYPE, nullable=True)
    created_at: Mapped[int] = mapped_column(Integer)
    due_at: Mapped[int] = mapped_column(Integer, index=True)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    claimed_by: Mapped[str | None] = mapped_column(String(36), nullable=True)
    last_error: Mapped[str | None] = mapped_column(
        String(MAIL_ERROR_MAX_CHARS), nullable=True
    )
    failed_at: Mapped[int | None] = mapped_column(Integer, nullable=True)


class DeploymentIdentity(db.Model):
    """The one row that names this database: its cache namespace.

    Written once, by migration 0010, with a random value. Every instance of
    the deployment reads the same row whatever host it reaches the database
    by (a Galera node, an alias, an address), and another database, made by
    its own migrations, has another value (``postservice.cache.namespace``).
    """

    __tablename__ = "deployment_identity"
    __table_args__ = {
        key: value for key, value in TABLE_ARGS.items() if key != "sqlite_autoincrement"
    }

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    identity: Mapped[str] = mapped_column(String(32))


@event.listens_for(DeploymentIdentity.__table__, "after_create")
def _identify(table, connection, **kwargs):
    """A table made by ``create_all`` (scripts, not the service) gets its row
    too; the migration writes its own."""
    connection.execute(table.insert().values(id=1, identity=secrets.token_hex(8)))


class UpgradeTask(db.Model):
    """A one-off task of an upgrade that has run, by name, and when.

    ``tokens import-legacy`` records itself here: once the logouts of 1.x
    are in ``revoked_tokens``, a start may go on while Redis does not answer
    (``docker/entrypoint.sh``).
    """

    __tablename__ = "upgrade_tasks"
    __table_args__ = {
        key: value for key, value in TABLE_ARGS.items() if key != "sqlite_autoincrement"
    }

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    done_at: Mapped[int] = mapped_column(Integer)


class CacheAnnouncement(db.Model):
    """A change whose invalidation Redis did not take when it was made.

    Written after the change committed and before it is answered, when the
    user's generation of ``kind`` could not be replaced in Redis; any
    instance that reaches Redis replaces it and deletes the row, and no
    instance reads the cache without having looked here within the last
    moment (``postservice.cache.generations``). No foreign key: the rows of
    a deleted account are what make its cached answers go.
    """

    __tablename__ = "cache_announcements"
    __table_args__ = TABLE_ARGS

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
