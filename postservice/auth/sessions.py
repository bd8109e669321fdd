"""Sessions: a login and the refresh tokens that follow from it.

Each login or registration starts a session (a row of ``sessions``, a token
family) and answers a token pair: an access token carrying the session's id
(claim ``sid``) and a refresh token of the session. Refreshing with the
session's current refresh token replaces it (rotation) and answers a new
pair. The token it replaced ("previous") presented again within
``REFRESH_REUSE_INTERVAL`` seconds of the rotation is answered like the first
time, with the *same* new refresh token: two tabs that refreshed at once end
up holding one token. Presented later, or any older token of the session, it
is taken for a stolen copy: 401, and the session is revoked with every token
of it; the account's other sessions are untouched.

The database owns sessions, as it owns revocations: refresh decides on the
session's row, locked (``SELECT ... FOR UPDATE``) so that concurrent
refreshes decide one after the other, and an access token's verdict
(``revocation.verdict_from_database``) checks that its session is live in the
same SELECT. Every revocation replaces the user's tokens generation after its
commit (``transactions.write``), so no instance serves a cached verdict made
before it.

A refresh token signed by HS256 is a function of its claims, so what the row
keeps of the current one (jti, issue and expiry times) is enough to issue it
again, byte for byte.
"""

import time
import uuid
from datetime import UTC, datetime, timedelta

import jwt
from flask import current_app, jsonify, request
from flask_jwt_extended import create_access_token, create_refresh_token, decode_token
from flask_jwt_extended.exceptions import JWTExtendedException
from sqlalchemy import delete, or_, select, update

from postservice.auth import revocation
from postservice.cache import generations
from postservice.db import transactions
from postservice.extensions import db
from postservice.http.errors import Forbidden, NotFound, Unauthorized
from postservice.models import USER_AGENT_MAX_CHARS, User, UserSession

SESSION_CLAIM = revocation.SESSION_CLAIM
SUSPENDED = "Account suspended"
REVOKED = "Token has been revoked"
REUSED = "Refresh token reused; the session is revoked"


class Suspended(Forbidden):
    def __init__(self):
        super().__init__(SUSPENDED)


def _now():
    return int(time.time())


def rfc3339(seconds):
    """Unix seconds as RFC 3339 in UTC: ``2026-12-01T10:00:00Z``."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _user_agent():
    agent = request.headers.get("User-Agent")
    return agent[:USER_AGENT_MAX_CHARS] if agent else None


def _seconds(setting):
    """A lifetime as Flask-JWT-Extended takes it (a timedelta or seconds)."""
    value = current_app.config[setting]
    return int(value.total_seconds() if isinstance(value, timedelta) else value)


def _refresh_lifetime():
    return _seconds("JWT_REFRESH_TOKEN_EXPIRES")


def _access_lifetime():
    return _seconds("JWT_ACCESS_TOKEN_EXPIRES")


def new_session(user_id, now=None):
    """A new session row for ``user_id``, added to the transaction (not committed)."""
    now = _now() if now is None else now
    session = UserSession(
        user_id=user_id,
        created_at=now,
        last_used_at=now,
        user_agent=_user_agent(),
        refresh_jti=str(uuid.uuid4()),
        refresh_issued_at=now,
        refresh_expires_at=now + _refresh_lifetime(),
    )
    db.session.add(session)
    return session


class PasswordChanged(Exception):
    """The account's password changed while a login checked the old one."""


def start(user_id, password_hash):
    """Start a session for an account that has just proved who it is with
    the password whose hash is ``password_hash``.

    Returns what ``token_pair`` needs. The account is read again, locked for
    share until the commit: a logout everywhere or a change of password
    that committed while the password was checked is seen (its version
    goes into the tokens, or its new password raises ``PasswordChanged``),
    and one that commits later waits for this session, then ends it with the
    others. So a login never answers tokens that are already void. Raises
    ``Unauthorized`` when the account is gone meanwhile, ``Suspended`` when
    it was suspended meanwhile.
    """

    def create():
        account = db.session.execute(
            select(User.password_hash, User.token_version, User.suspended_at)
            .where(User.id == user_id)
            .with_for_update(read=True)
        ).first()
        if account is None:
            db.session.rollback()
            raise Unauthorized("Could not validate credentials")
        if account.password_hash != password_hash:
            db.session.rollback()
            raise PasswordChanged()
        if account.suspended_at is not None:
            db.session.rollback()
            raise Suspended()
        session = new_session(user_id)
        db.session.commit()
        return Issued.of(session, account.token_version)

    # A new session has no cached verdict to make stale.
    return transactions.write(create, user_id=user_id, invalidates=())


class Issued:
    """What a token pair is made of: the session and its current refresh token."""

    def __init__(self, user_id, session_id, version, jti, issued_at, expires_at):
        self.user_id = user_id
        self.session_id = session_id
        self.version = version
        self.jti = jti
        self.issued_at = issued_at
        self.expires_at = expires_at

    @classmethod
    def of(cls, session, version):
        return cls(
            session.user_id,
            session.id,
            version,
            session.refresh_jti,
            session.refresh_issued_at,
            session.refresh_expires_at,
        )


def token_pair(issued, status=200):
    """The response of register, login, change-password and refresh."""
    identity = str(issued.user_id)  # PyJWT requires "sub" to be a string
    claims = {
        revocation.VERSION_CLAIM: issued.version,
        SESSION_CLAIM: issued.session_id,
    }
    access = create_access_token(identity=identity, additional_claims=claims)
    refresh = create_refresh_token(
        identity=identity,
        additional_claims={
            **claims,
            "jti": issued.jti,
            "iat": issued.issued_at,
            "nbf": issued.issued_at,
            "exp": issued.expires_at,
        },
    )
    response = jsonify(
        {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": _access_lifetime(),
            "refresh_token": refresh,
        }
    )
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def _refresh_claims(token):
    """The claims of a valid refresh token; 401 for anything else."""
    try:
        payload = decode_token(token)
    except jwt.ExpiredSignatureError:
        raise Unauthorized("Token has expired") from None
    except (jwt.InvalidTokenError, JWTExtendedException, ValueError):
        raise Unauthorized("Could not validate credentials") from None
    if payload.get("type") != "refresh":
        raise Unauthorized("Only refresh tokens are allowed")
    try:
        user_id = int(payload["sub"])
        session_id = int(payload[SESSION_CLAIM])
    except (KeyError, TypeError, ValueError):
        raise Unauthorized("Could not validate credentials") from None
    return user_id, session_id, payload


def refresh(token):
    """A new pair for a refresh token; see the module's docstring.

    Raises ``Unauthorized`` (revoked, expired, reused: the session is then
    revoked) and ``Suspended``.
    """
    user_id, session_id, payload = _refresh_claims(token)
    interval = current_app.config["REFRESH_REUSE_INTERVAL"]

    def decide():
        now = _now()
        account = db.session.execute(
            select(User.token_version, User.suspended_at).where(User.id == user_id)
        ).first()
        session = db.session.execute(
            select(UserSession)
            .where(UserSession.id == session_id, UserSession.user_id == user_id)
            .with_for_update()
        ).scalar_one_or_none()
        if account is None:  # deleted: its tokens name no account, as elsewhere
            db.session.rollback()
            raise Unauthorized("Could not validate credentials")
        if session is None or session.revoked_at is not None:
            db.session.rollback()
            raise Unauthorized(REVOKED)
        if payload.get(revocation.VERSION_CLAIM, 0) != account.token_version:
            db.session.rollback()
            raise Unauthorized(REVOKED)
        if account.suspended_at is not None:
            db.session.rollback()
            raise Suspended()
        jti = payload["jti"]
        if jti == session.refresh_jti:
            session.previous_jti = jti
            session.rotated_at = now
            session.refresh_jti = str(uuid.uuid4())
            session.refresh_issued_at = now
            session.refresh_expires_at = now + _refresh_lifetime()
        elif (
            jti == session.previous_jti
            and session.rotated_at is not None
            and now - session.rotated_at <= interval
        ):
            pass  # the same new token again
        else:
            session.revoked_at = now
            db.session.commit()
            return None
        session.last_used_at = now
        issued = Issued.of(session, account.token_version)
        db.session.commit()
        return issued

    issued = transactions.run(decide)
    if issued is None:
        # The revocation committed; every instance's cached verdicts go.
        transactions.invalidate(user_id, (generations.TOKENS,))
        raise Unauthorized(REUSED)
    return issued


def live(user_id, current_session_id):
    """The user's live sessions, oldest first, as the API answers them."""
    now = _now()
    rows = db.session.scalars(
        select(UserSession)
        .where(
            UserSession.user_id == user_id,
            UserSession.revoked_at.is_(None),
            UserSession.refresh_expires_at >= now,
        )
        .order_by(UserSession.id)
    ).all()
    db.session.rollback()
    return [
        {
            "id": row.id,
            "created_at": rfc3339(row.created_at),
            "last_used_at": rfc3339(row.last_used_at),
            "current": row.id == current_session_id,
            "user_agent": row.user_agent,
        }
        for row in rows
    ]


def end(user_id, session_id):
    """Revoke one of the user's sessions; ``NotFound`` unless it is live and theirs."""

    def revoke():
        # Live as the list has it: an expired session is not listed, nor ended.
        ended = _end_sessions(
            user_id,
            UserSession.id == session_id,
            UserSession.refresh_expires_at >= _now(),
        )
        db.session.commit()
        return ended

    if not transactions.write(
        revoke, user_id=user_id, invalidates=(generations.TOKENS,)
    ):
        raise NotFound("Session not found")


def _end_sessions(user_id, *where):
    """Mark the user's live sessions matching ``where`` revoked; returns how many.

    Does not commit.
    """
    return db.session.execute(
        update(UserSession)
        .where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None), *where)
        .values(revoked_at=_now())
    ).rowcount


def set_suspended(user_id, suspended):
    """Suspend or unsuspend the account; nothing else changes.

    Returns False when there is no such account.
    """

    def change():
        changed = db.session.execute(
            update(User)
            .where(User.id == user_id)
            .values(suspended_at=_now() if suspended else None)
        ).rowcount
        db.session.commit()
        return bool(changed)

    return transactions.write(
        change, user_id=user_id, invalidates=(generations.TOKENS,)
    )


def purge_ended(now=None):
    """Delete sessions revoked or expired; returns how many."""
    now = _now() if now is None else now
    deleted = db.session.execute(
        delete(UserSession).where(
            or_(
                UserSession.revoked_at.is_not(None),
                UserSession.refresh_expires_at < now,
            )
        )
    ).rowcount
    db.session.commit()
    return deleted
