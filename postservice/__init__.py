"""postservice: user accounts and their text posts, as a JSON API."""

import os
import secrets

import config as settings
from postservice import extensions, mail
from postservice.auth import throttling, tokens
from postservice.cache import backend as cache_backend
from postservice.cache import health as cache_health
from postservice.cache import namespace as cache_namespace
from postservice.db import engines
from postservice.http import api, docs, errors, headers, proxy
from postservice.http.app import App
from postservice.mail import commands as mail_commands
from postservice.ops import commands, health, logs, metrics, requestlog
from postservice.posts import copies, rebuilds
from postservice.posts.routes import bp as posts_bp
from postservice.users import passwords
from postservice.users.routes import bp as users_bp


def create_app(config=None):
    """Build an app; ``config`` is a dict of settings that win over the environment.

    Each step below needs only the settings; none depends on running before
    or after another (hooks that must come first put themselves first).

    Raises ``config.ConfigError`` (a ``SystemExit``) for unsafe or unreadable settings.
    """
    # No static files: the docs page serves its own (postservice.http.docs).
    app = App(__name__, instance_relative_config=True, static_folder=None)
    configure(app, config)
    register_observers(app)
    register_extensions(app)
    register_blueprints(app)
    register_answers(app)
    logs.configure_unless_done(app.config["LOG_FORMAT"])
    logs.escape_waitress_lines()
    return app


def configure(app, overrides):
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.from_mapping(settings.app_settings(app.instance_path, overrides))
    if not app.config["JWT_SECRET_KEY"]:
        app.config["JWT_SECRET_KEY"] = (
            settings.development_secret(app.instance_path)
            if app.config["MODE"] == "development"
            else secrets.token_urlsafe(48)
        )
    # Non-ASCII would otherwise cost six bytes a character in every response.
    app.json.ensure_ascii = False
    app.json.sort_keys = False


def register_observers(app):
    """What every request passes through: its metrics, its log line, and the
    proxy in front, which names the client before anything reads it."""
    metrics.init_app(app)
    requestlog.init_app(app)
    proxy.init_app(app)


def register_extensions(app):
    engines.init_app(app)
    extensions.migrate.init_app(
        app, extensions.db, directory=_migrations_dir(app), compare_type=True
    )
    extensions.jwt.init_app(app)
    tokens.register_jwt_callbacks()
    # The namespace before the cache: its prefix is the cache's key prefix.
    cache_namespace.init_app(app)
    cache_backend.init_app(app)
    cache_health.init_app(app)
    passwords.init_app(app)
    throttling.init_app(app)
    rebuilds.init_app(app)
    copies.init_app(app)
    mail.init_app(app)


def _migrations_dir(app):
    """The committed migrations beside the package, wherever the command runs from."""
    beside_package = os.path.join(os.path.dirname(app.root_path), "migrations")
    return beside_package if os.path.isdir(beside_package) else "migrations"


def register_blueprints(app):
    api.init_app(app, [users_bp, posts_bp, docs.bp])
    app.register_blueprint(docs.pages)
    app.register_blueprint(health.bp)
    app.register_blueprint(commands.bp)
    commands.init_app(app)
    app.cli.add_command(mail_commands.mail_cli)


def register_answers(app):
    """One JSON error shape for every error, and the security headers."""
    errors.register_error_handlers(app)
    headers.init_app(app)
