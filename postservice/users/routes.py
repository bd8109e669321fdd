"""Account endpoints: /api/v1/users/..."""

from flask import Response, jsonify
from flask_jwt_extended import get_jwt

from postservice.auth import sessions, throttling
from postservice.auth.revocation import revoke
from postservice.auth.tokens import TokenSchema, current_user_id
from postservice.http.api import Blueprint
from postservice.models import ID_MAX
from postservice.ops import metrics
from postservice.users import service
from postservice.users.schemas import (
    AcceptedSchema,
    ChangePasswordSchema,
    DeleteAccountSchema,
    LoginSchema,
    PasswordResetConfirmSchema,
    PasswordResetSchema,
    RefreshSchema,
    RegisterSchema,
    SessionSchema,
    UserSchema,
    VerifyEmailSchema,
)

bp = Blueprint(
    "users", __name__, url_prefix="/api/v1/users", description="Accounts and tokens"
)

PASSWORDS_BUSY = (
    "The database is unavailable, or too many password checks are running at once"
)
NOT_THE_OWNER = "Wrong password, or no valid token"
INVALID_TOKEN = "The token is malformed, altered, expired or already used"  # noqa: S105
# One answer for every email: it must not tell whether an account has it.
RESET_QUEUED = {"detail": "If an account has this email, a reset link is on its way"}
VERIFICATION_QUEUED = {"detail": "A verification link is on its way"}


def _no_content():
    response = Response(status=204)
    del response.headers["Content-Type"]  # there is no content to have a type
    return response


@bp.post("/register")
@throttling.limit("REGISTER_RATE_LIMIT")
@bp.arguments(RegisterSchema)
@bp.response(201, TokenSchema, description="Registered: a token pair")
@bp.alt_response(
    400, description="The email is already registered, or the body is not JSON"
)
@bp.alt_response(429)
@bp.alt_response(503, description=PASSWORDS_BUSY)
def register(body):
    """Create an account and get a token pair

    The email is trimmed and lower-cased. The password needs 8 characters to
    72 bytes of UTF-8. Starts the account's first session.
    """
    return sessions.token_pair(service.register(**body), status=201)


@bp.post("/login")
@throttling.limit("LOGIN_RATE_LIMIT")
@bp.arguments(LoginSchema)
@bp.response(200, TokenSchema, description="Logged in: a token pair")
@bp.alt_response(401, description="Wrong password")
@bp.alt_response(403)
@bp.alt_response(404, description="No account has this email")
@bp.alt_response(429)
@bp.alt_response(503, description=PASSWORDS_BUSY)
def login(body):
    """Get a token pair for an existing account: a new session

    Failed attempts are counted per account and address, and per account:
    a guesser is slowed down while the owner, elsewhere or from an address
    they logged in from before, still logs in. A suspended account answers
    403, only once the password is right.
    """
    with throttling.password_attempt(body["email"]):
        issued = service.log_in(**body)
    return sessions.token_pair(issued)


@bp.post("/password-reset")
@throttling.limit("LOGIN_RATE_LIMIT")
@bp.arguments(PasswordResetSchema)
@bp.response(202, AcceptedSchema, description="The same answer for every email")
@bp.alt_response(429)
@bp.alt_response(503, description="The database is unavailable; retry")
def password_reset(body):
    """Ask for a password reset link by mail

    The answer, and the work behind it, are the same whether an account has
    this email or not; only an account's owner receives a mail, with a link
    `{PUBLIC_URL}/reset-password?token=...` good once, for
    `PASSWORD_RESET_TOKEN_EXPIRES` seconds. Throttled per client like login,
    and per email (`PASSWORD_RESET_RATE_LIMIT`).
    """
    throttling.count("PASSWORD_RESET_RATE_LIMIT", body["email"])
    service.request_password_reset(email=body["email"])
    return RESET_QUEUED


@bp.post("/password-reset/confirm")
@throttling.limit("LOGIN_RATE_LIMIT")
@bp.arguments(PasswordResetConfirmSchema)
@bp.response(204, description="The password is set; every session has ended")
@bp.alt_response(400, description=INVALID_TOKEN + ", or the body is not JSON")
@bp.alt_response(429)
@bp.alt_response(503, description=PASSWORDS_BUSY)
def password_reset_confirm(body):
    """Set a new password with the token of a reset link

    The new password follows the rules of registration; one it refuses
    (422) leaves the token good. Every token and session of the account
    ends, and no new one starts: log in with the new password.
    """
    service.reset_password(**body)
    metrics.revoked("password_reset")
    return _no_content()


@bp.post("/verify-email")
@throttling.limit("LOGIN_RATE_LIMIT")
@bp.arguments(VerifyEmailSchema)
@bp.response(204, description="The account's email is verified")
@bp.alt_response(400, description=INVALID_TOKEN + ", or the body is not JSON")
@bp.alt_response(429)
@bp.alt_response(503, description="The database is unavailable; retry")
def verify_email(body):
    """Verify the account's email with the token of a verification link

    Registration mails the link `{PUBLIC_URL}/verify-email?token=...`.
    """
    service.verify_email(token=body["token"])
    return _no_content()


@bp.post("/me/verify-email")
@bp.protected
@throttling.limit("LOGIN_RATE_LIMIT")
@bp.response(202, AcceptedSchema, description="A new verification mail is queued")
@bp.alt_response(400, description="The email is already verified")
@bp.alt_response(429)
@bp.alt_response(503, description="The database is unavailable; retry")
def resend_verification():
    """Ask for the verification mail again

    Throttled per account (`VERIFY_EMAIL_RATE_LIMIT`) and per client like
    login. Earlier links stay good until they expire.
    """
    user_id = current_user_id()
    throttling.count("VERIFY_EMAIL_RATE_LIMIT", f"user:{user_id}")
    service.resend_verification(user_id=user_id)
    return VERIFICATION_QUEUED


@bp.post("/refresh")
@throttling.limit("LOGIN_RATE_LIMIT")
@bp.arguments(RefreshSchema)
@bp.response(200, TokenSchema, description="A new token pair of the same session")
@bp.alt_response(
    401,
    description="The refresh token is invalid, expired or revoked, or was "
    "already used (the session is then revoked): log in again",
)
@bp.alt_response(403)
@bp.alt_response(429)
@bp.alt_response(503, description="The database is unavailable; retry")
def refresh(body):
    """Get a new token pair with a refresh token

    The refresh token sent is replaced by the new one (rotation). Sent again
    within `REFRESH_REUSE_INTERVAL` seconds it gets the same new pair's
    refresh token; later, it is taken for a stolen copy and the whole
    session is revoked. Throttled like login.
    """
    return sessions.token_pair(sessions.refresh(body["refresh_token"]))


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
    with throttling.password_attempt(service.account_email(user_id)):
        service.delete_account(user_id=user_id, **body)
    metrics.revoked("account_deleted")
    return _no_content()


@bp.post("/change-password")
@bp.protected
@throttling.limit("LOGIN_RATE_LIMIT")
@bp.arguments(ChangePasswordSchema)
@bp.response(200, TokenSchema, description="Changed: a new session's token pair")
@bp.alt_response(401, description=NOT_THE_OWNER)
@bp.alt_response(429)
@bp.alt_response(503, description=PASSWORDS_BUSY)
def change_password(body):
    """Change the password; every session and older token is revoked

    The new password follows the rules of registration. Answers the token
    pair of a new session. Throttled like login.
    """
    user_id = current_user_id()
    with throttling.password_attempt(service.account_email(user_id)):
        issued = service.change_password(user_id=user_id, **body)
    metrics.revoked("password_change")
    return sessions.token_pair(issued)


@bp.post("/logout")
@bp.protected
@bp.response(204, description="Revoked: the token is refused from now on")
@bp.alt_response(503, description="The database is unavailable; retry")
def logout():
    """End the session of the token sent with this request

    The token, its session's refresh token and the session's other access
    tokens are refused from now on. Other sessions keep working.
    """
    revoke(get_jwt())
    metrics.revoked("logout")
    return _no_content()


@bp.post("/logout-all")
@bp.protected
@bp.response(204, description="Revoked: every token issued so far is refused")
@bp.alt_response(503, description="The database is unavailable; retry")
def logout_all():
    """Revoke every token and end every session of the account

    Log in again for a new token pair.
    """
    service.log_out_everywhere(user_id=current_user_id())
    metrics.revoked("logout_all")
    return _no_content()


@bp.get("/me/sessions")
@bp.protected
@bp.response(200, SessionSchema(many=True), description="The live sessions")
@bp.alt_response(503, description="The database is unavailable")
def list_sessions():
    """The caller's live sessions, oldest first

    `current` is true for the session of the token sent.
    """
    response = jsonify(
        sessions.live(current_user_id(), get_jwt().get(sessions.SESSION_CLAIM))
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.delete(f"/me/sessions/<id(max={ID_MAX}):session_id>")
@bp.protected
@bp.response(204, description="Ended: the session's tokens are refused from now on")
@bp.alt_response(404, description="No live session of this account has this id")
@bp.alt_response(503, description="The database is unavailable; retry")
def end_session(session_id):
    """End one of the caller's sessions

    Its refresh token and access tokens are refused at once, on every
    instance. Ending the current session is logging out.
    """
    sessions.end(current_user_id(), session_id)
    return _no_content()
