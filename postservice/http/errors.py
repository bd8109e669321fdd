"""One JSON error shape, ``{"detail": ...}``, for every error the app returns.

Registered on the app rather than a blueprint: blueprint handlers never see
routing 404/405 or the 413 raised while the body is read.
"""

import contextlib
import json
import logging
import traceback

from flask import jsonify
from marshmallow import Schema, ValidationError, fields
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException

from postservice.extensions import db

log = logging.getLogger(__name__)

BEARER = {"WWW-Authenticate": "Bearer"}


class ErrorSchema(Schema):
    """The body of every error response."""

    detail = fields.String(required=True, metadata={"example": "Post not found"})


class ValidationErrorSchema(ErrorSchema):
    """A 422: which fields failed and why."""

    detail = fields.String(required=True, metadata={"example": "Invalid input"})
    errors = fields.Dict(
        keys=fields.String(),
        required=True,
        metadata={"example": {"email": ["Not a valid email address."]}},
    )


class APIError(Exception):
    """An error answered as ``{"detail": detail}`` with ``status``."""

    def __init__(self, status, detail, *, headers=None, errors=None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}
        self.errors = errors


class Unauthorized(APIError):
    def __init__(self, detail="Not authenticated"):
        super().__init__(401, detail, headers=BEARER)


class NotFound(APIError):
    def __init__(self, detail):
        super().__init__(404, detail)


class Forbidden(APIError):
    def __init__(self, detail):
        super().__init__(403, detail)


class PreconditionFailed(APIError):
    """An ``If-Match`` that names none of the resource's current tags."""

    def __init__(self):
        super().__init__(412, "Precondition Failed")


class PayloadTooLarge(APIError):
    def __init__(self, detail):
        super().__init__(413, detail)


def json_error_body(detail):
    """Byte for byte what ``jsonify`` writes for ``{"detail": detail}``, for
    answers given outside the app."""
    return (json.dumps({"detail": detail}, separators=(",", ":")) + "\n").encode()


def error_response(status, detail, headers=None, errors=None):
    body = {"detail": detail}
    if errors is not None:
        body["errors"] = errors
    response = jsonify(body)
    response.status_code = status
    response.headers.extend(headers or {})
    return response


def handle_api_error(e):
    return error_response(e.status, e.detail, e.headers, e.errors)


def handle_validation_error(e):
    # Which field failed and why, e.g. {"email": ["Not a valid email address."]}.
    return error_response(422, "Invalid input", errors=e.normalized_messages())


def handle_http_exception(e):
    # Keep headers such as Allow on 405, drop Werkzeug's HTML content type.
    headers = [(k, v) for k, v in e.get_headers() if k.lower() != "content-type"]
    return error_response(e.code, e.name, headers)


def database_error_summary(e):
    """What a log may say of a database error: its kinds and the driver's code.

    Never its message: SQLAlchemy's holds the statement, and the driver's can
    quote the data (a duplicate email, say). Parameters are hidden from
    messages anyway (``hide_parameters``), but no message is logged at all.
    """
    orig = getattr(e, "orig", None)
    if orig is None:
        return type(e).__name__
    code = orig.args[0] if orig.args and isinstance(orig.args[0], int) else None
    detail = type(orig).__name__ + (f" {code}" if code is not None else "")
    return f"{type(e).__name__} ({detail})"


def _where(e):
    """The traceback's frames, without the exception's message."""
    return "".join(traceback.format_tb(e.__traceback__)).rstrip()


def handle_database_unavailable(e):
    log.warning("database unavailable: %s", database_error_summary(e))
    # The connection may already be gone; the pool replaces it either way.
    with contextlib.suppress(Exception):
        db.session.rollback()
    return error_response(503, "Database unavailable", {"Retry-After": "1"})


def handle_unexpected(e):
    if isinstance(e, sa_exc.SQLAlchemyError):
        log.error(
            "unhandled database error: %s\n%s", database_error_summary(e), _where(e)
        )
    else:
        log.exception("unhandled error", exc_info=e)
    return error_response(500, "Internal Server Error")


def register_error_handlers(app):
    app.register_error_handler(APIError, handle_api_error)
    app.register_error_handler(ValidationError, handle_validation_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    for error in (
        sa_exc.OperationalError,
        sa_exc.InterfaceError,
        sa_exc.TimeoutError,
        sa_exc.DisconnectionError,
    ):
        app.register_error_handler(error, handle_database_unavailable)
    app.register_error_handler(Exception, handle_unexpected)
