"""The Flask class of the app: Flask with our request and JSON classes, sync
checks done once per function instead of once per call, and reads run again
when their database connection was lost."""

from flask import Flask, request

from postservice.db import transactions
from postservice.http.converters import IdConverter
from postservice.http.parsing import JSONProvider, JSONRequest

# Requests that change nothing: run again from the start (up to
# DATABASE_RETRIES times) when the database connection is lost under them,
# before anything of the answer was sent.
READS = frozenset({"GET", "HEAD"})
# Functions whose check is remembered; beyond this many, checks are not
# stored (a bound, should anything pass ever-new functions).
SYNC_MEMO_SIZE = 1000


def canonical_scheme(authorization):
    """``Authorization`` with its scheme spelt ``Bearer`` however it came.

    An auth scheme is case-insensitive (RFC 9110, section 11.1): ``bearer``
    is the ``token_type`` login answers, and clients send it as it is.
    Flask-JWT-Extended compares the scheme exactly.
    """
    value = authorization.lstrip(" \t")
    scheme = value[:6]
    if scheme != "Bearer" and scheme.lower() == "bearer" and value[6:7] in (" ", "\t"):
        return "Bearer" + value[6:]
    return authorization


class App(Flask):
    request_class = JSONRequest
    json_provider_class = JSONProvider

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sync_memo = {}
        self.url_map.converters["id"] = IdConverter
        # werkzeug answers a path with a doubled slash by a redirect to the
        # path with one: an HTML page, its Location built from the Host
        # header. Such a path names no resource here: 404 as any other.
        self.url_map.merge_slashes = False

    def ensure_sync(self, func):
        # Flask asks inspect whether every hook and view is a coroutine
        # function, on every request: ten checks a request here. A
        # function's kind never changes, so the answer is kept.
        synced = self._sync_memo.get(func)
        if synced is None:
            synced = super().ensure_sync(func)
            if len(self._sync_memo) < SYNC_MEMO_SIZE:
                self._sync_memo[func] = synced
        return synced

    def wsgi_app(self, environ, start_response):
        authorization = environ.get("HTTP_AUTHORIZATION")
        if authorization is not None:
            environ["HTTP_AUTHORIZATION"] = canonical_scheme(authorization)
        return super().wsgi_app(environ, start_response)

    def make_default_options_response(self):
        # Flask's answer to OPTIONS is an empty text/html 200: say the same
        # (the Allow header) with no body and no type.
        response = super().make_default_options_response()
        response.status_code = 204
        del response.headers["Content-Type"]
        return response

    def dispatch_request(self):
        # A node that dies under a read (or the proxy in front of the nodes
        # moving to another one) cuts the connection mid-query; the read runs
        # again on a new connection, which reaches a node that is up. Writes
        # retry themselves where they can tell what happened
        # (``db.transactions``); a streamed listing that fails after its
        # first chunk cannot be taken back and is not covered.
        if request.method not in READS:
            return super().dispatch_request()
        return transactions.read(super().dispatch_request)
