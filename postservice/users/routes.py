"""Account endpoints: /api/v1/users/..."""

from flask import Response
from flask_jwt_extended import get_jwt

from postservice.auth import throttling
from postservice.auth.revocation import revoke
from postservice.auth.tokens import TokenSchema, current_user_id, token_response
from postservice.http.api import Blueprint
from postservice.ops import metrics
from postservice.users import service
from postservice.users.schemas import (
    ChangePasswordSchema,
    DeleteAccountSchema,
    LoginSchema,
    RegisterSchema,
    UserSchema,
)

bp = Blueprint(
    "users", __name__, url_prefix="/api/v1/users", description="Accounts and tokens"
)

PASSWORDS_BUSY = (
    "The database is unavailable, or too many password checks are running at once"
)
NOT_THE_OWNER = "Wrong password, or no valid token"


def _no_content():
    response = Response(status=204)
    del response.headers["Content-Type"]  # there is no content to have a type
    return response


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
    return token_response(user.id, user.token_version, status=201)


@bp.post("/login")
@throttling.limit("LOGIN_RATE_LIMIT")
@bp.arguments(LoginSchema)
@bp.response(200, TokenSchema, description="Logged in")
@bp.alt_response(401, description="Wrong password")
@bp.alt_response(404, description="No account has this email")
@bp.alt_response(429)
@bp.alt_response(503, description=PASSWORDS_BUSY)
def login(body):
    """Get a token for an existing account

    Failed attempts are counted per account and address, and per account:
    a guesser is slowed down while the owner, elsewhere or from an address
    they logged in from before, still logs in.
    """
    with throttling.password_attempt(body["email"]) as attempt:
        user_id, version = service.authenticate(**body)
        attempt.known_as(f"user:{user_id}")
    return token_response(user_id, version)


@bp.get("/me")
@bp.protected
@bp.response(200, UserSchema, description="The account of the token")
@bp.alt_response(401, description="No valid token, or its account no longer exists")
@bp.alt_response(503, description="The database is unavailable")
def me():
    """The caller's account"""
    return service.get_user(current_user_id())


@bp.delete("/me")
@bp.protected
@throttling.limit("LOGIN_RATE_LIMIT")
@bp.arguments(DeleteAccountSchema)
@bp.response(204, description="Deleted, with every post and token")
@bp.alt_response(401, description=NOT_THE_OWNER)
@bp.alt_response(429)
@bp.alt_response(503, description=PASSWORDS_BUSY)
def delete_me(body):
    """Delete the account, its posts and every token

    Throttled like login. The email may be registered again afterwards, as a
    new account.
    """
    user_id = current_user_id()
    with throttling.password_attempt(f"user:{user_id}"):
        service.delete_account(user_id=user_id, **body)
    metrics.revoked("account_deleted")
    return _no_content()


@bp.post("/change-password")
@bp.protected
@throttling.limit("LOGIN_RATE_LIMIT")
@bp.arguments(ChangePasswordSchema)
@bp.response(200, TokenSchema, description="Changed: a new token")
@bp.alt_response(401, description=NOT_THE_OWNER)
@bp.alt_response(429)
@bp.alt_response(503, description=PASSWORDS_BUSY)
def change_password(body):
    """Change the password; every older token is revoked

    The new password follows the rules of registration. Throttled like login.
    """
    user_id = current_user_id()
    with throttling.password_attempt(f"user:{user_id}"):
        version = service.change_password(user_id=user_id, **body)
    metrics.revoked("password_change")
    return token_response(user_id, version)


@bp.post("/logout")
@bp.protected
@bp.response(204, description="Revoked: the token is refused from now on")
@bp.alt_response(503, description="The database is unavailable; retry")
def logout():
    """Revoke the token sent with this request

    Other tokens of the same account keep working.
    """
    revoke(get_jwt())
    metrics.revoked("logout")
    return _no_content()


@bp.post("/logout-all")
@bp.protected
@bp.response(204, description="Revoked: every token issued so far is refused")
@bp.alt_response(503, description="The database is unavailable; retry")
def logout_all():
    """Revoke every token of the account

    Log in again for a new token.
    """
    service.log_out_everywhere(user_id=current_user_id())
    metrics.revoked("logout_all")
    return _no_content()
