"""The OpenAPI document, built from the marshmallow schemas that do the work.

Request bodies are the schemas the views load with, response bodies the
schemas they dump with, so the document cannot drift from the code. What a
schema cannot say (which statuses an operation answers, who may call it) is
kept in ``OPERATIONS``, keyed by endpoint; ``tests/test_openapi.py`` fails
when a route under ``/api/`` is missing from it.
"""

import re
from dataclasses import dataclass, field
from importlib.metadata import version

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from werkzeug.routing import IntegerConverter

from .errors import ErrorSchema, ValidationErrorSchema
from .posts.schemas import (
    AddPostSchema,
    PageQuerySchema,
    PostCreatedSchema,
    PostSchema,
)
from .users.schemas import (
    ChangePasswordSchema,
    DeleteAccountSchema,
    LoginSchema,
    RegisterSchema,
    TokenSchema,
    UserSchema,
)

OPENAPI_VERSION = "3.0.3"  # what the bundled Swagger UI renders
BEARER_SCHEME = "bearerAuth"
JSON = "application/json"

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
ERRORS = {
    400: ("The body is not valid JSON in UTF-8", ErrorSchema, None),
    401: (
        "No token, or an invalid, expired or revoked one",
        ErrorSchema,
        {"WWW-Authenticate": WWW_AUTHENTICATE},
    ),
    404: ("Not found", ErrorSchema, None),
    413: ("The body is over 8 MiB", ErrorSchema, None),
    415: ("The body is not sent as application/json", ErrorSchema, None),
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
BODY_ERRORS = {400: None, 413: None, 415: None, 422: None}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Any 1 to 255 visible ASCII characters, new for each post. "
    "Sent again (within 24 hours, with the same text), the request answers "
    "the post stored the first time and stores nothing.",
    "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"},
}


@dataclass
class Operation:
    """What the document says about one endpoint beyond its schemas.

    ``responses`` maps a status to ``(description, schema)`` for successes
    and to a description (or ``None`` for the usual one) for errors.
    """

    summary: str
    tag: str
    responses: dict
    body: type | None = None
    query: type | None = None
    protected: bool = False
    description: str = ""
    errors: dict = field(default_factory=dict)
    headers: list = field(default_factory=list)


OPERATIONS = {
    "users.register": Operation(
        summary="Create an account and get a token",
        tag="users",
        body=RegisterSchema,
        responses={201: ("Registered", TokenSchema)},
        errors={
            **BODY_ERRORS,
            400: "The email is already registered, or the body is not JSON",
            429: None,
            503: "The database is unavailable, or too many password checks "
            "are running at once",
        },
        description="The email is trimmed and lower-cased. The password needs "
        "8 characters to 72 bytes of UTF-8.",
    ),
    "users.login": Operation(
        summary="Get a token for an existing account",
        tag="users",
        body=LoginSchema,
        responses={200: ("Logged in", TokenSchema)},
        errors={
            **BODY_ERRORS,
            401: "Wrong password",
            404: "No account has this email",
            429: None,
            503: "The database is unavailable, or too many password checks "
            "are running at once",
        },
    ),
    "users.me": Operation(
        summary="The caller's account",
        tag="users",
        protected=True,
        responses={200: ("The account of the token", UserSchema)},
        errors={
            401: "No valid token, or its account no longer exists",
            503: "The database is unavailable",
        },
    ),
    "users.logout": Operation(
        summary="Revoke the token sent with this request",
        tag="users",
        protected=True,
        responses={204: ("Revoked: the token is refused from now on", None)},
        errors={401: None, 503: "The database is unavailable; retry"},
        description="Other tokens of the same account keep working.",
    ),
    "users.logout_all": Operation(
        summary="Revoke every token of the account",
        tag="users",
        protected=True,
        responses={204: ("Revoked: every token issued so far is refused", None)},
        errors={401: None, 503: "The database is unavailable; retry"},
        description="Log in again for a new token.",
    ),
    "users.change_password": Operation(
        summary="Change the password; every older token is revoked",
        tag="users",
        protected=True,
        body=ChangePasswordSchema,
        responses={200: ("Changed: a new token", TokenSchema)},
        errors={
            **BODY_ERRORS,
            401: "Wrong current password, or no valid token",
            429: None,
            503: "The database is unavailable, or too many password checks "
            "are running at once",
        },
        description="The new password follows the rules of registration.",
    ),
    "users.delete_me": Operation(
        summary="Delete the account, its posts and every token",
        tag="users",
        protected=True,
        body=DeleteAccountSchema,
        responses={204: ("Deleted", None)},
        errors={
            **BODY_ERRORS,
            401: "Wrong password, or no valid token",
            429: None,
            503: "The database is unavailable, or too many password checks "
            "are running at once",
        },
    ),
    "posts.add_post": Operation(
        summary="Add a post",
        tag="posts",
        protected=True,
        body=AddPostSchema,
        headers=[IDEMPOTENCY_KEY],
        responses={200: ("Created", PostCreatedSchema)},
        errors={
            **BODY_ERRORS,
            401: None,
            413: "The text is over 1 MiB of UTF-8, or the body over 8 MiB",
            422: "Invalid input, or an `Idempotency-Key` already used with "
            "another text",
            503: "The database is unavailable, or busy (the request was not "
            "stored, unless it was under an `Idempotency-Key`); retry",
        },
    ),
    "posts.get_posts": Operation(
        summary="List the caller's posts, oldest first",
        tag="posts",
        protected=True,
        query=PageQuerySchema,
        responses={200: ("The posts", PostSchema(many=True))},
        errors={
            401: None,
            422: "`limit` or `after_id` is not a whole number in range",
            503: "The database is unavailable",
        },
        description="Without parameters, every post. With `limit` (1 to 1000, "
        "default 100) and/or `after_id` (default 0), one page of posts with "
        'ids above `after_id`, and a `Link: <url>; rel="next"` header when '
        "more may follow.",
    ),
    "posts.delete_post": Operation(
        summary="Delete one of the caller's posts",
        tag="posts",
        protected=True,
        responses={204: ("Deleted", None)},
        errors={
            401: None,
            404: "No such post, or it is someone else's",
            503: "The database is unavailable",
        },
    ),
    "docs.openapi_document": Operation(
        summary="This document",
        tag="docs",
        responses={200: ("The OpenAPI document", {"type": "object"})},
    ),
}

_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?(\w+)>")


def spec_for(app):
    """The document as a dict, built once per app on first use."""
    document = app.extensions.get("openapi")
    if document is None:
        document = app.extensions["openapi"] = build(app)
    return document


def build(app):
    spec = APISpec(
        title="postservice",
        version=version("postservice"),
        openapi_version=OPENAPI_VERSION,
        plugins=[MarshmallowPlugin()],
        info={"description": DESCRIPTION},
    )
    spec.components.security_scheme(
        BEARER_SCHEME, {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    )
    spec.components.schema("Error", schema=ErrorSchema)
    spec.components.schema("ValidationError", schema=ValidationErrorSchema)
    paths = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        operation = OPERATIONS.get(rule.endpoint)
        if operation is None:
            continue
        path = _ARGUMENT.sub(r"{\1}", rule.rule)
        parameters, operations = paths.setdefault(path, (_parameters(rule), {}))
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            operations[method.lower()] = _operation(rule.endpoint, operation)
    for path, (parameters, operations) in paths.items():
        spec.path(path=path, parameters=parameters or None, operations=operations)
    return spec.to_dict()


def _parameters(rule):
    parameters = []
    for name in _ARGUMENT.findall(rule.rule):
        # Werkzeug keeps the converter, with its bounds, only on this attribute.
        converter = rule._converters[name]
        schema = {"type": "string"}
        if isinstance(converter, IntegerConverter):
            schema = {"type": "integer", "minimum": converter.min or 0}
            if converter.max is not None:
                schema["maximum"] = converter.max
        parameters.append(
            {"name": name, "in": "path", "required": True, "schema": schema}
        )
    return parameters


def _operation(endpoint, operation):
    result = {
        "operationId": endpoint.replace(".", "_"),
        "summary": operation.summary,
        "tags": [operation.tag],
        "responses": {},
    }
    if operation.description:
        result["description"] = operation.description
    if operation.query is not None:
        # The marshmallow plugin turns the schema into one parameter a field.
        result["parameters"] = [{"in": "query", "schema": operation.query}]
    if operation.headers:
        result.setdefault("parameters", []).extend(operation.headers)
    if operation.body is not None:
        result["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": operation.body}},
        }
    if operation.protected:
        result["security"] = [{BEARER_SCHEME: []}]
    for status, (description, schema) in operation.responses.items():
        response = {"description": description}
        if schema is not None:
            response["content"] = {JSON: {"schema": schema}}
        result["responses"][str(status)] = response
    for status, description in sorted(operation.errors.items()):
        default, schema, headers = ERRORS[status]
        response = {
            "description": description or default,
            "content": {JSON: {"schema": schema}},
        }
        if headers:
            response["headers"] = headers
        result["responses"][str(status)] = response
    return result
