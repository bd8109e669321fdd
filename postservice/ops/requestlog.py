"""One log line per request, and the request id that ties it to the client.

The line holds the method, the path (never the query string), the Flask
endpoint, the status, the duration and the request id, and nothing from
headers or bodies, so passwords, tokens and post text never reach the logs.
The same measurement feeds the request metrics. An incoming
``X-Request-ID`` is kept when it looks like an id (a proxy or client chose
it); otherwise one is generated. Either way it is echoed in the response.

Answers given before the app's hooks run, by the server itself or by the
proxy handling, are counted and logged the same way (``early_answers``).
"""

import logging
import os
import re
import time

from flask import g, request

from postservice.ops import logs, metrics

log = logging.getLogger("postservice.request")

HEADER = "X-Request-ID"
ENVIRON_KEY = "HTTP_X_REQUEST_ID"
# Letters, digits and a few separators only: the id goes into log lines and
# response headers, where anything else could forge a line or a header.
VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# The method or path of a request not read as far as its request line.
UNREAD = "-"


def init_app(app):
    """The request log's hooks: the first to run before a request and the
    last after it, wherever the factory calls this, so that its clock
    covers every other hook. Each request is counted in the app's metrics
    too (raises ``RuntimeError`` before ``metrics.init_app``)."""
    record = metrics.request_recorder(app)

    def finish(response):
        return _finish(response, record)

    # Flask runs before-request hooks in order and after-request hooks in
    # reverse order: the front of both lists is first in and last out.
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request_funcs.setdefault(None, []).insert(0, finish)


def request_id():
    """This request's id (also in the response's ``X-Request-ID``)."""
    return g.request_id


def incoming_or_new_id(incoming):
    """``incoming`` (an ``X-Request-ID``, or None) when it looks like an id,
    else a new one: the rule of ``_start``, for answers outside Flask."""
    return incoming if incoming and VALID_ID.fullmatch(incoming) else _new_id()


def early_answers(app):
    """``answered(method, path, status, seconds, request_id)`` for ``app``.

    For the answers given before the app's hooks run: waitress's own (the
    server's ``JsonErrorTask``: a request it cannot read, over its limits,
    in a transfer coding it does not know) and the proxy handling's 400
    (``postservice.http.proxy``). Each is counted in the app's request
    metrics under the endpoint ``none`` and written as one request line,
    as ``_finish`` does for the app's own answers. ``method`` and ``path``
    are None when the request was not read that far: its line says ``-``.
    Raises ``RuntimeError`` before ``metrics.init_app``.
    """
    record = metrics.request_recorder(app)

    def answered(method, path, status, seconds, rid):
        method = method or UNREAD
        record(metrics.NO_ENDPOINT, method, status, seconds)
        if log.isEnabledFor(logging.INFO):
            path = UNREAD if path is None else _printable(path)
            _write_line(method, path, metrics.NO_ENDPOINT, status, seconds * 1000, rid)

    return answered


def _new_id():
    # 128 random bits as 32 hex digits, as uuid4().hex gives, without
    # building a UUID object on every request.
    return os.urandom(16).hex()


def _start():
    started = time.perf_counter()
    # Each name of the request's context is a lookup: the objects once.
    store = g._get_current_object()
    store.request_started = started
    # The environ itself: werkzeug's Headers raises and catches an exception
    # for a header that is absent, as this one mostly is.
    incoming = request.environ.get(ENVIRON_KEY, "")
    store.request_id = incoming if VALID_ID.fullmatch(incoming) else _new_id()


def _printable(path):
    # A decoded path can hold newlines (%0A): escape them so one request is
    # always one line.
    return logs.printable(path[:512])


def _finish(response, record):
    # Each name of the request's context is a lookup: the objects once.
    current, store = request._get_current_object(), g._get_current_object()
    method, endpoint = current.method, current.endpoint or metrics.NO_ENDPOINT
    rid = getattr(store, "request_id", None) or _new_id()
    started = getattr(store, "request_started", None)
    seconds = time.perf_counter() - started if started else 0.0
    duration_ms = seconds * 1000
    response.headers[HEADER] = rid
    status = response.status_code
    record(endpoint, method, status, seconds)
    if not log.isEnabledFor(logging.INFO):
        return response
    _write_line(method, _printable(current.path), endpoint, status, duration_ms, rid)
    return response


def _write_line(method, path, endpoint, status, duration_ms, rid):
    """The request line, for the app's answers and for those outside Flask.

    Built and handled directly: ``log.info`` would also walk the stack to
    find this line's caller, which every record here shares.
    """
    log.handle(
        log.makeRecord(
            log.name,
            logging.INFO,
            __file__,
            0,
            "%s %s %s %.1fms request_id=%s",
            (method, path, status, duration_ms, rid),
            None,
            func="_write_line",
            extra={
                "method": method,
                "path": path,
                "endpoint": endpoint,
                "status": status,
                "duration_ms": round(duration_ms, 1),
                "request_id": rid,
            },
        )
    )
