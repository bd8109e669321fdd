"""Everything about tokens: their response body, and the 401s for every way
they fail (issuing them is ``auth.sessions``).

Flask-JWT-Extended answers bad signatures, malformed tokens and wrong
algorithms with 422 and ``{"msg": ...}`` by default. The API promises 401
with ``WWW-Authenticate: Bearer`` and ``{"detail": ...}`` for all of them.
"""

from flask import current_app
from flask_jwt_extended import get_jwt_identity
from jwt.exceptions import InvalidTokenError, MissingRequiredClaimError
from marshmallow import Schema, fields, validate

from postservice.auth import revocation
from postservice.extensions import jwt
from postservice.http.errors import BEARER, Unauthorized, error_response
from postservice.models import ID_MAX


class TokenSchema(Schema):
    """The body of a token response: an access token and a refresh token."""

    access_token = fields.String(
        required=True, metadata={"description": "a JWT, sent as a bearer token"}
    )
    token_type = fields.String(
        required=True,
        dump_default="bearer",
        validate=validate.OneOf(["bearer"]),
    )
    expires_in = fields.Integer(
        required=True,
        metadata={"description": "seconds the access token is valid for"},
    )
    refresh_token = fields.String(
        required=True,
        metadata={
            "description": "a JWT for POST /api/v1/users/refresh; "
            "replaced by each refresh"
        },
    )


# Every token this service issues has them; one without them was not made
# here, whatever key signed it.
REQUIRED_CLAIMS = ("exp", "iat", "jti", "sub", "type")

# Flask-JWT-Extended's words for a token of the other type.
WRONG_TYPE = {"Only non-refresh tokens are allowed": "Only access tokens are allowed"}


def current_user_id():
    """The id of the caller; only for views behind ``@jwt_required()``."""
    identity = get_jwt_identity()
    try:
        return int(identity)
    except (TypeError, ValueError):
        raise Unauthorized("Could not validate credentials") from None


def _unauthorized(detail):
    return error_response(401, detail, BEARER)


def _signing_key(jwt_header, unverified_claims):
    """The key to check a token with; refuses tokens that lack a required claim.

    Flask-JWT-Extended fills in a missing ``type`` and ``jti`` after
    decoding, so this, which sees the claims as sent, is where to tell.
    """
    for claim in REQUIRED_CLAIMS:
        if claim not in unverified_claims:
            raise MissingRequiredClaimError(claim)
    # Ids as this service writes them, before any reaches SQL: a number no
    # row can have (over 2**63, say) would fail there, not as a bad token.
    sub = unverified_claims["sub"]
    if not (isinstance(sub, str) and _is_id(sub)):
        raise InvalidTokenError("sub is not an account id")
    sid = unverified_claims.get(revocation.SESSION_CLAIM)
    if sid is not None and not (type(sid) is int and 0 < sid <= ID_MAX):
        raise InvalidTokenError("sid is not a session id")
    return current_app.config["JWT_SECRET_KEY"]


def _is_id(text):
    if not (text.isascii() and text.isdigit() and len(text) <= len(str(ID_MAX))):
        return False
    return 0 < int(text) <= ID_MAX


def register_jwt_callbacks():
    jwt.decode_key_loader(_signing_key)
    jwt.token_in_blocklist_loader(revocation.is_revoked)
    jwt.unauthorized_loader(lambda reason: _unauthorized("Not authenticated"))
    jwt.invalid_token_loader(
        lambda reason: _unauthorized(
            WRONG_TYPE.get(reason, "Could not validate credentials")
        )
    )
    jwt.expired_token_loader(lambda header, payload: _unauthorized("Token has expired"))
    jwt.revoked_token_loader(
        lambda header, payload: _unauthorized("Token has been revoked")
    )
    jwt.user_lookup_error_loader(
        lambda header, payload: _unauthorized("Could not validate credentials")
    )
    jwt.token_verification_failed_loader(
        lambda header, payload: _unauthorized("Could not validate credentials")
    )
    jwt.needs_fresh_token_loader(
        lambda header, payload: _unauthorized("Fresh token required")
    )
