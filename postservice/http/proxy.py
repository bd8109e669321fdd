"""The proxy in front: whose ``X-Forwarded-*`` headers are believed, in one place.

With ``TRUSTED_PROXY`` set, a request from that address (any, for ``*``)
has its client address, scheme and host taken from the headers named by
``TRUSTED_PROXY_HEADERS``, believing ``TRUSTED_PROXY_COUNT`` proxies; from
any other peer those headers are dropped before the app sees them. Without
it, they are never believed: any client can send them.

It is waitress's own handling (its settings' checks, its parser, its
clearing of the headers not trusted), applied here in the app so that it
holds under every WSGI server, and answering a malformed header from the
trusted proxy in the API's error shape instead of waitress's plain text.
"""

import logging
import time

from waitress.adjustments import Adjustments
from waitress.proxy_headers import (
    PROXY_HEADERS,
    MalformedProxyHeader,
    clear_untrusted_headers,
    parse_proxy_headers,
)
from werkzeug.wsgi import get_path_info

from config import ConfigError
from postservice.http.errors import json_error_body
from postservice.http.headers import ERROR_HEADERS
from postservice.ops import requestlog

log = logging.getLogger(__name__)


def init_app(app):
    """Wrap ``app.wsgi_app``; checks the settings now.

    Without a trusted proxy every ``X-Forwarded-*`` and ``Forwarded`` header
    is dropped, as waitress does by default, whatever server runs the app.
    """
    count = app.config["TRUSTED_PROXY_COUNT"]
    proxy = app.config["TRUSTED_PROXY"] or ("*" if count else None)
    if not proxy:
        app.wsgi_app = ignoring_proxy_headers(app.wsgi_app)
        return
    try:
        adjustments = Adjustments(
            trusted_proxy=proxy,
            trusted_proxy_count=count,
            trusted_proxy_headers=app.config["TRUSTED_PROXY_HEADERS"],
            clear_untrusted_proxy_headers=True,
        )
    except ValueError as e:
        raise ConfigError(f"TRUSTED_PROXY_HEADERS: {e}") from None
    app.wsgi_app = trusting_proxy(
        app.wsgi_app, adjustments, requestlog.early_answers(app)
    )


def ignoring_proxy_headers(wsgi_app):
    """``wsgi_app`` without the proxy headers any client can send."""

    def ignore(environ, start_response):
        clear_untrusted_headers(environ, PROXY_HEADERS)
        return wsgi_app(environ, start_response)

    return ignore


def trusting_proxy(wsgi_app, adj, answered=None):
    """``wsgi_app`` behind the proxy handling that waitress's ``adj`` describe.

    Its 400 comes before the app's hooks: ``answered``
    (``requestlog.early_answers``) counts and logs it as theirs would.
    """

    def translate(environ, start_response):
        untrusted = PROXY_HEADERS
        peer = environ.get("REMOTE_ADDR")
        if adj.trusted_proxy in ("*", peer):
            try:
                untrusted = parse_proxy_headers(
                    environ,
                    trusted_proxy_count=adj.trusted_proxy_count,
                    trusted_proxy_headers=adj.trusted_proxy_headers,
                )
            except MalformedProxyHeader as e:
                return malformed(environ, start_response, e, peer)
        clear_untrusted_headers(
            environ, untrusted, log_warning=adj.log_untrusted_proxy_headers
        )
        return wsgi_app(environ, start_response)

    def malformed(environ, start_response, e, peer):
        started = time.perf_counter()
        # waitress names a bad proto= in Forwarded "Forwarded Proto=".
        header = e.header.split()[0]
        log.warning("malformed %s header from %s: %s", header, peer, e.reason)
        body = json_error_body(f"Malformed {header} header")
        headers = [*ERROR_HEADERS, ("Content-Length", str(len(body)))]
        if answered is not None:
            rid = requestlog.incoming_or_new_id(environ.get("HTTP_X_REQUEST_ID"))
            headers.append(("X-Request-ID", rid))
        start_response("400 Bad Request", headers)
        if answered is not None:
            answered(
                environ.get("REQUEST_METHOD"),
                get_path_info(environ),
                400,
                time.perf_counter() - started,
                rid,
            )
        return [body]

    return translate
