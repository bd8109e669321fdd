"""Account endpoints: /api/v1/users/..."""

from flask import Response
from flask_jwt_extended import get_jwt

from .. import throttling
from ..api import Blueprint
from ..auth import TokenSchema, current_user_id, token_response
from ..revocation import revoke
from . import service
from .schemas import LoginSchema, RegisterSchema, UserSchema

bp = Blueprint(
    "users", __name__, url_prefix="/api/v1/users", description="Accounts and tokens"
)

PASSWORDS_BUSY = (
    "The database is unavailable, or too many password checks are running at once"
)


@bp.post("/register")
@throttling.limit("REGISTER_RATE_LIMIT")
@bp.arguments(RegisterSchema)
@bp.response(201, TokenSchema, description="Registered")
@bp.alt_response(
    400, description="The email is already registered, or the body is not JSON"
)
@bp.alt_response(429)
@bp.alt_response(503, description=PASSWORDS_BUSY)
def register(body):
    """Create an account and get a token

    The email is trimmed and lower-cased. The password needs 8 characters to
    72 bytes of UTF-8.
    """
    user = service.register(**body)
    return token_response(user.id, status=201)


@bp.post("/login")
@throttling.limit("LOGIN_RATE_LIMIT")
@bp.arguments(LoginSchema)
@bp.response(200, TokenSchema, description="Logged in")
@bp.alt_response(401, description="Wrong password")
@bp.alt_response(404, description="No account has this email")
@bp.alt_response(429)
@bp.alt_response(503, description=PASSWORDS_BUSY)
def login(body):
    """Get a token for an existing account"""
    return token_response(service.authenticate(**body))


@bp.get("/me")
@bp.protected
@bp.response(200, UserSchema, description="The account of the token")
@bp.alt_response(401, description="No valid token, or its account no longer exists")
@bp.alt_response(503, description="The database is unavailable")
def me():
    """The caller's account"""
    return service.get_user(current_user_id())


@bp.post("/logout")
@bp.protected
@bp.response(204, description="Revoked: the token is refused from now on")
@bp.alt_response(503, description="The revocation could not be recorded; retry")
def logout():
    """Revoke the token sent with this request

    Other tokens of the same account keep working.
    """
    revoke(get_jwt())
    response = Response(status=204)
    del response.headers["Content-Type"]  # there is no content to have a type
    return response
