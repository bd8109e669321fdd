"""Operational ``flask`` commands: ``flask --app postservice wait-for-db``."""

import time

import click
from flask import Blueprint
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from .extensions import db

bp = Blueprint("commands", __name__, cli_group=None)


@bp.cli.command("wait-for-db")
@click.option(
    "--timeout", default=60.0, show_default=True, help="Seconds to wait at most."
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
