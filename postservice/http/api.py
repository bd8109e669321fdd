"""The API layer: views declare what they read, answer and how they fail.

Each view says it with flask-smorest's decorators (``@bp.arguments``,
``@bp.response``, ``@bp.alt_response``), and the OpenAPI document at
``/api/v1/openapi.json`` is generated from them, so it cannot drift from
the code. The errors several views share are described once, in
``ERRORS``; ``@bp.protected`` puts a view behind a token and documents what
every protected view can answer because of it.

Two things here differ from flask-smorest's defaults: requests are read by
``validation.RequestParser`` (our 400/413/415/422), and errors are answered
by ``errors.py``, never by smorest's own handler.
"""

from copy import deepcopy
from importlib.metadata import version

import flask_smorest
from flask_jwt_extended import jwt_required
from flask_smorest.spec.plugins import FlaskPlugin

from config import SERVER_BODY_LIMIT
from postservice.http.errors import ErrorSchema, ValidationErrorSchema
from postservice.http.parsing import RequestParser

OPENAPI_VERSION = "3.0.3"  # what the bundled Swagger UI renders
BEARER_SCHEME = "bearerAuth"

DESCRIPTION = """\
User accounts and their text posts. Register or log in for a token, then
send it as `Authorization: Bearer <token>` (the **Authorize** button).

Every error is JSON: `{"detail": "..."}`, plus `errors` (field: messages)
for invalid input (422).
"""

RETRY_AFTER = {
    "description": "seconds to wait before retrying",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}
WWW_AUTHENTICATE = {
    "description": "always `Bearer`",
    "required": True,
    "schema": {"type": "string"},
}
# status: (usual description, body schema, headers)
ERRORS = {
    400: ("The body is not valid JSON in UTF-8", ErrorSchema, None),
    401: (
        "No token, or an invalid, expired or revoked one",
        ErrorSchema,
        {"WWW-Authenticate": WWW_AUTHENTICATE},
    ),
    403: (
        "The account is suspended: `Account suspended`; on the posts routes, "
        "with `REQUIRE_VERIFIED_EMAIL`, also `Email not verified`",
        ErrorSchema,
        None,
    ),
    404: ("Not found", ErrorSchema, None),
    412: (
        "If-Match names none of the current tags: `Precondition Failed`",
        ErrorSchema,
        None,
    ),
    413: ("The body is over 8 MiB", ErrorSchema, None),
    415: (
        "The body is not sent as application/json, or sent with a Content-Encoding",
        ErrorSchema,
        None,
    ),
    422: ("Invalid input: `errors` names each field", ValidationErrorSchema, None),
    429: (
        "Too many attempts from this address or for this email",
        ErrorSchema,
        {"Retry-After": RETRY_AFTER},
    ),
    503: (
        "A backing service is unavailable; retry",
        ErrorSchema,
        {"Retry-After": RETRY_AFTER},
    ),
}
# What the server (waitress, serve/channel.py) answers itself, on any path,
# before the app sees the request: every operation can be answered so.
SERVER_ERRORS = {
    400: "The request is not well-formed HTTP: its request line, a header, "
    "Content-Length",
    413: f"The body is {SERVER_BODY_LIMIT // 2**20} MiB or more: over the server's "
    "limit",
    431: "The headers are over the server's limit",
    501: "A transfer coding other than chunked",
}
# What reading a JSON body can fail with, and reading a query string.
BODY_ERRORS = (400, 413, 415, 422)
QUERY_ERRORS = (422,)


class PathPlugin(FlaskPlugin):
    """Names each operation after its endpoint (``users.login``: ``users_login``)."""

    def path_helper(self, rule, operations, parameters, **kwargs):
        for operation in operations.values():
            operation.setdefault("operationId", rule.endpoint.replace(".", "_"))
        return super().path_helper(rule, operations, parameters, **kwargs)


class Api(flask_smorest.Api):
    """flask-smorest's Api, answering errors the way ``errors.py`` does."""

    ERROR_SCHEMA = ErrorSchema
    # Each operation lists the errors it can answer; no catch-all "default".
    DEFAULT_ERROR_RESPONSE_NAME = None

    def _register_error_handlers(self):
        # Its handler answers {"code", "status", "message"}; errors.py,
        # registered on the app, answers every error as {"detail": ...}.
        pass

    def _register_pagination_header(self):
        # Its X-Pagination header (and schema) are unused: pages here are
        # keyed by id and linked with a Link header.
        pass


class Blueprint(flask_smorest.Blueprint):
    """A smorest Blueprint reading requests with our parser.

    ``arguments`` also documents the errors reading can answer, and
    ``alt_response`` given only a status documents the usual error from
    ``ERRORS``; ``route`` documents ``SERVER_ERRORS`` on every operation.
    Decorators that only document add no layer around the view: their cost
    would be paid on every request for nothing.
    """

    ARGUMENTS_PARSER = RequestParser()

    def route(self, rule, **options):
        register = super().route(rule, **options)

        def decorator(view):
            # Outermost: what an operation documents itself wins (and its
            # 400 says this one too, see alt_response).
            for status, description in SERVER_ERRORS.items():
                document = flask_smorest.Blueprint.alt_response(
                    self, status, description=description, schema=ErrorSchema
                )
                view = _documenting_only(document)(view)
            return register(view)

        return decorator

    def arguments(self, schema, *, location="json", **kwargs):
        # webargs builds a new instance of a schema class on every request.
        if isinstance(schema, type):
            schema = schema()
        parse = super().arguments(schema, location=location, **kwargs)
        errors = BODY_ERRORS if location == "json" else QUERY_ERRORS

        def decorator(view):
            view = parse(view)
            for status in errors:
                view = self.alt_response(status)(view)
            return view

        return decorator

    def alt_response(self, status_code, response=None, *, description=None, **kw):
        if response is None and not kw and status_code in ERRORS:
            usual, schema, headers = ERRORS[status_code]
            kw = {"schema": schema, "headers": deepcopy(headers)}
            description = description or usual
        if status_code == 400 and description:
            # The server's own 400 (SERVER_ERRORS) is possible on every
            # operation, and this description replaces its.
            description += ", or the request is not well-formed HTTP"
        return _documenting_only(
            super().alt_response(status_code, response, description=description, **kw)
        )

    @staticmethod
    def doc(**kwargs):
        return _documenting_only(flask_smorest.Blueprint.doc(**kwargs))

    def protected(self, view):
        """Only for a valid token; documents the 401, 403 and 503 that can follow.

        Outermost, below the route: the token is checked before the body is
        read. Descriptions given by decorators below it win.
        """
        view = jwt_required()(view)
        view = self.doc(security=[{BEARER_SCHEME: []}])(view)
        for status in (401, 403, 503):
            view = self.alt_response(status)(view)
        return view


def _documenting_only(decorator):
    """``decorator``'s documentation on the view itself, without its wrapper."""

    def document(view):
        # The wrapper holds a copy of the view's documentation plus its own.
        view._apidoc = decorator(view)._apidoc
        return view

    return document


def init_app(app, blueprints):
    """An Api for ``app`` (smorest keeps one spec per Api) with ``blueprints``."""
    api = Api(
        app,
        spec_kwargs={
            "title": "postservice",
            "version": version("postservice"),
            "openapi_version": OPENAPI_VERSION,
            "info": {"description": DESCRIPTION},
            "flask_plugin": PathPlugin(),
        },
    )
    api.spec.components.security_scheme(
        BEARER_SCHEME, {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    )
    for blueprint in blueprints:
        api.register_blueprint(blueprint)
    return api


def document(app):
    """The OpenAPI document of ``app`` as a dict, built once."""
    spec = app.extensions.get("openapi")
    if spec is None:
        api = app.extensions["flask-smorest"]["apis"][""]["ext_obj"]
        spec = app.extensions["openapi"] = api.spec.to_dict()
    return spec
