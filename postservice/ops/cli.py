"""The command group of the maintenance commands (``users``, ``tokens``,
``posts``, ``mail``): a database or Redis that cannot be used is one line,
``Error: ...`` and exit status 1, not a traceback of the driver's."""

import click
from flask.cli import AppGroup, ScriptInfo
from sqlalchemy.exc import SQLAlchemyError

from postservice.cache.clients import REDIS_ERRORS


def _reason(error):
    # The driver's own words, first line, never the statement (SQLAlchemy
    # appends it and its parameters on the lines after).
    cause = getattr(error, "orig", None) or error
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__


class MaintenanceGroup(AppGroup):
    def invoke(self, ctx):
        # Without Redis the cache that serves is the server's, in its own
        # process: a change made here reaches it only announced in the
        # database, where it looks (``cache.generations``).
        app = ctx.ensure_object(ScriptInfo).load_app()
        app.extensions["cache_health"].announces_all = True
        try:
            return super().invoke(ctx)
        except SQLAlchemyError as e:
            raise click.ClickException(
                f"the database cannot be used: {_reason(e)}"
            ) from None
        except REDIS_ERRORS as e:
            raise click.ClickException(f"Redis cannot be used: {_reason(e)}") from None
