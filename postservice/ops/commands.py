"""Operational ``flask`` commands: ``wait-for-db``, ``users ...``, ``tokens ...``,
``posts ...``."""

import math
import time

import click
from flask import Blueprint
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from postservice.auth import revocation, sessions
from postservice.cache.clients import REDIS_ERRORS
from postservice.db import transactions
from postservice.extensions import db
from postservice.ops.cli import MaintenanceGroup
from postservice.posts import idempotency
from postservice.users import service as users_service

bp = Blueprint("commands", __name__, cli_group=None)


def _finite_seconds(ctx, param, value):
    # nan passes FloatRange (every comparison with it is false): it would
    # wait forever.
    if not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number of seconds")
    return value


@bp.cli.command("wait-for-db")
@click.option(
    "--timeout",
    default=60.0,
    type=click.FloatRange(min=0),
    callback=_finite_seconds,
    show_default=True,
    help="Seconds to wait at most.",
)
def wait_for_db(timeout):
    """Wait until the database answers a query, for container start-up.

    Exits 1 with the last error when it does not answer within ``timeout``
    seconds, so a start script stops instead of migrating a missing server.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with db.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError as e:
            if time.monotonic() >= deadline:
                reason = str(e.orig if hasattr(e, "orig") else e).splitlines()[0]
                raise click.ClickException(
                    f"database not answering after {timeout:g} s: {reason}"
                ) from None
            time.sleep(0.5)
        else:
            click.echo("database is answering")
            db.engine.dispose()
            return


users_cli = MaintenanceGroup("users", help="Support tasks on accounts.")
tokens_cli = MaintenanceGroup("tokens", help="Maintenance of token revocations.")
posts_cli = MaintenanceGroup("posts", help="Maintenance of post records.")


def _account(email):
    user_id = users_service.find_id(email.strip().lower())
    if user_id is None:
        raise click.ClickException(f"no account with email {email!r}")
    return user_id


def _announced(change):
    """Run ``change``; exit 1 when its invalidation reached neither Redis nor
    the database (``transactions.NotAnnounced``).

    Redis down alone is no failure: the change is announced in the database
    and every instance obeys it within seconds (``cache.announcements``).
    """
    try:
        return change()
    except transactions.NotAnnounced:
        raise click.ClickException(
            "done in the database, but neither Redis nor the database took "
            "its invalidation: cached answers about this account may be "
            "served for up to POSTS_CACHE_TTL seconds; run the command again"
        ) from None


@users_cli.command("delete")
@click.argument("email")
def delete_user(email):
    """Delete the account EMAIL, its posts and its tokens."""
    user_id = _account(email)
    _announced(lambda: users_service.remove_account(user_id))
    click.echo(f"deleted {email}")


@users_cli.command("revoke")
@click.argument("email")
def revoke_user(email):
    """Log the account EMAIL out everywhere: every token it has stops working."""
    user_id = _account(email)
    _announced(lambda: users_service.log_out_everywhere(user_id=user_id))
    click.echo(f"every token of {email} is revoked")


@users_cli.command("suspend")
@click.argument("email")
def suspend_user(email):
    """Suspend the account EMAIL: its tokens, refresh and login answer 403.

    Nothing is deleted; ``users unsuspend`` restores it.
    """
    user_id = _account(email)
    _announced(lambda: sessions.set_suspended(user_id, True))
    click.echo(f"suspended {email}")


@users_cli.command("unsuspend")
@click.argument("email")
def unsuspend_user(email):
    """Lift the suspension of the account EMAIL."""
    user_id = _account(email)
    _announced(lambda: sessions.set_suspended(user_id, False))
    click.echo(f"unsuspended {email}")


@tokens_cli.command("purge")
def purge_tokens():
    """Forget revocations of tokens that have expired anyway, and ended sessions."""
    click.echo(f"purged {revocation.purge_expired()} expired revocation(s)")
    click.echo(f"purged {sessions.purge_ended()} ended session(s)")


@tokens_cli.command("import-legacy")
@click.option(
    "--skip-unreachable",
    is_flag=True,
    help="When Redis does not answer and the import has run before (or there "
    "are no accounts yet), say so and exit 0 (container start).",
)
def import_legacy(skip_unreachable):
    """Copy revocations kept only in Redis (1.x layout) into the database.

    Safe to run again; does nothing without REDIS_URL.
    """
    try:
        imported = revocation.import_legacy()
    except REDIS_ERRORS as e:
        db.session.rollback()
        if not skip_unreachable or revocation.legacy_import_needed():
            # Served before the import, the tokens 1.x logged out would work
            # again: the first start of this version waits for Redis.
            raise
        # The service itself runs without Redis; so do later starts.
        click.echo(
            f"Redis not answering; no logouts of 1.x left to import: {e}",
            err=True,
        )
        return
    click.echo(f"imported {imported} revocation(s)")


@posts_cli.command("purge-keys")
def purge_keys():
    """Forget Idempotency-Key records older than a day (they no longer apply)."""
    click.echo(f"purged {idempotency.purge_expired()} expired idempotency key(s)")


def init_app(app):
    app.cli.add_command(users_cli)
    app.cli.add_command(tokens_cli)
    app.cli.add_command(posts_cli)
