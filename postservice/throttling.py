"""Throttling of login and registration, per client address and per email.

The limits come from the configuration (``LOGIN_RATE_LIMIT``,
``REGISTER_RATE_LIMIT``) and are counted in Redis when ``REDIS_URL`` is set,
so every instance shares them, otherwise in the process. A throttled
request is ``429 {"detail": ...}`` with ``Retry-After``.

Each app gets its own ``Limiter``: Flask-Limiter keeps its storage on the
limiter object, so one shared object would make apps built side by side
count in each other's storage.

When Redis cannot be asked, Flask-Limiter logs one warning and counts in
the process's memory until Redis answers again (its in-memory fallback):
an outage must neither turn logins into 500s nor lift the limits. Each
instance then counts on its own.
"""

import math
import time

from flask import current_app, request
from flask_limiter import Limiter, RateLimitExceeded

from . import metrics
from .errors import error_response

EMAIL_KEY_MAX_CHARS = 254


def limit(setting):
    """Mark a view as throttled by the rate limit in the setting ``setting``.

    The limits are attached by ``init_app`` once the views are registered.
    """

    def mark(view):
        view.throttled_by = setting
        return view

    return mark


def client_address():
    """The caller's address: the peer, or X-Forwarded-For behind trusted proxies.

    ``TRUSTED_PROXY_COUNT`` makes the factory install ProxyFix, which
    rewrites ``remote_addr``; otherwise the header is not believed.
    """
    return request.remote_addr or "unknown"


def _email():
    body = request.get_json(silent=True)
    email = body.get("email") if isinstance(body, dict) else None
    if not isinstance(email, str) or not email.strip():
        return None
    # Normalised as registration and login do, so case does not dodge the limit.
    return email.strip().lower()[:EMAIL_KEY_MAX_CHARS]


def _email_key():
    return "email:" + (_email() or "")


def _without_email():
    return _email() is None


def init_app(app):
    """Attach the limits to the marked views; call after registering blueprints."""
    limiter = Limiter(key_func=client_address, app=app)
    app.extensions["throttle"] = limiter
    # Flask-Limiter also checks every request before it runs, for app-wide
    # default limits; there are none here, and the decorated views below
    # check their own limits. Dropping that hook spares every other request
    # (a cached get-posts most of all) the work of finding it has no limit.
    app.before_request_funcs[None] = [
        hook
        for hook in app.before_request_funcs.get(None, [])
        if hook != limiter._check_request_limit
    ]
    for endpoint, view in list(app.view_functions.items()):
        setting = getattr(view, "throttled_by", None)
        if setting is None:
            continue

        def value(setting=setting):
            return current_app.config[setting]

        view = limiter.limit(value, key_func=client_address)(view)
        view = limiter.limit(value, key_func=_email_key, exempt_when=_without_email)(
            view
        )
        app.view_functions[endpoint] = view
    app.register_error_handler(RateLimitExceeded, handle_rate_limited)


def handle_rate_limited(e):
    metrics.throttled()
    current = current_app.extensions["throttle"].current_limit
    retry_after = math.ceil(current.reset_at - time.time()) if current else 60
    return error_response(
        429,
        "Too many requests, try again later",
        {"Retry-After": str(max(1, retry_after))},
    )
