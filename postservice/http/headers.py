"""Security headers: what browsers and caches may do with our responses.

Every response forbids type sniffing (a post's text must never become
HTML) and framing (no page of ours inside someone else's, for clickjacking).
The Content-Security-Policy of the API allows nothing at all: its answers
are data, never pages. The docs page loads only its own scripts, styles
and the document, from this server, with no inline script.

A response to a request carrying a token, and every response carrying a
token (``auth.sessions.token_pair``), is ``Cache-Control: no-store``: what one
user sees must never be served to another by a shared cache.
"""

from flask import request

API_POLICY = "default-src 'none'; frame-ancestors 'none'"
DOCS_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
)
DOCS_PREFIX = "/docs"


# On every response, waitress's own error answers included (``serve``).
ALWAYS = (("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"))
# What the app's own error answers carry, for answers given before the app
# sees the request (the server's, the proxy handling's).
ERROR_HEADERS = (
    ("Content-Type", "application/json"),
    *ALWAYS,
    ("Content-Security-Policy", API_POLICY),
)


def init_app(app):
    app.after_request(add_security_headers)


def add_security_headers(response):
    headers = response.headers
    environ = request.environ
    policy = DOCS_POLICY if _is_docs(environ.get("PATH_INFO", "")) else API_POLICY
    # One look at the headers already there, then each of ours added: a set
    # would compare its name with every header, once per name. Views set
    # none of these, but a set keeps one of each should one ever do.
    present = {name.lower() for name, _ in headers}
    for name, value in (*ALWAYS, ("Content-Security-Policy", policy)):
        if name.lower() in present:
            headers[name] = value
        else:
            headers.add(name, value)
    if "HTTP_AUTHORIZATION" in environ:
        headers["Cache-Control"] = "no-store"
    return response


def _is_docs(path):
    return path == DOCS_PREFIX or path.startswith(DOCS_PREFIX + "/")
