"""Whether a token still opens the door: revocations owned by the database.

A token is refused when its ``jti`` was logged out (table
``revoked_tokens``), when its session (claim ``sid``, table ``sessions``) was
revoked, when its account's ``token_version`` moved past the token's ``ver``
claim (a new password, a reset, log out everywhere), or when its account is
gone; a suspended account's tokens answer 403, and so do an unverified
account's on the posts routes when ``REQUIRE_VERIFIED_EMAIL`` is set (the
verdict says "unverified"; verifying replaces the tokens generation).
The database is the source of truth; Redis only caches the verdict per
token, stored under the user's tokens generation (``user_state``), so a
verdict is never served after a change it did not see.

- A cached verdict is one ``MGET`` (with the generation; get-posts reads its
  listing in the same round trip through ``reads_along``) and no SQL.
- A miss, an evicted key, a flushed or restarted Redis: one SELECT decides,
  and the verdict is cached again.
- Redis down: the database decides on every request. A revocation is never
  "allowed by default".

Every change writes the database first and replaces the user's generation
after the commit, so a reader that raced it stores its verdict under the old
generation, never to be served.
"""

import logging
import time
from collections.abc import Callable
from typing import NamedTuple

from flask import Request, current_app, request
from sqlalchemy import delete, exists, select, true, update
from sqlalchemy.exc import IntegrityError

from postservice.cache import clients, generations
from postservice.cache import health as cache_health
from postservice.db import transactions
from postservice.extensions import db
from postservice.http.errors import Forbidden, Unauthorized
from postservice.models import RevokedToken, UpgradeTask, User, UserSession

log = logging.getLogger(__name__)

VERSION_CLAIM = "ver"
ALLOWED = b"ok"
REVOKED = b"revoked"
NO_ACCOUNT = b"no-account"
SUSPENDED = b"suspended"
# Allowed, but the account's email is not verified yet: refused only where
# REQUIRE_VERIFIED_EMAIL holds (the posts routes).
UNVERIFIED = b"unverified"
GATED_BLUEPRINTS = frozenset({"posts"})
EMAIL_NOT_VERIFIED = "Email not verified"
SESSION_CLAIM = "sid"


class ReadAlong(NamedTuple):
    """Cache keys a view reads in its token check's ``MGET`` (one round trip).

    ``keys(user_id)`` names them (keys of the same user, so of one slot);
    ``keep(user_id, values)`` is handed what was read, before the view runs,
    or None when Redis failed. ``wanted(request)`` says whether this request
    will use them (a paged get-posts does not): when it is false nothing is
    read along, so no request fetches bytes it ignores. ``script(user_id)``
    may name a script, ``(source, args)``, run on all the keys instead of
    the ``MGET`` (``generations.read``): it returns the verdict's two values
    first, as the ``MGET`` would, and what it read along after them.
    """

    keys: Callable[[int], list]
    keep: Callable[[int, list | None], None]
    wanted: Callable[[Request], bool] = lambda request: True
    script: Callable[[int], tuple | None] = lambda user_id: None


def reads_along(along):
    """Declare on a view, below its route, what its token check reads along.

    The declaration is an attribute of the view function, which the
    decorators above it carry outward (they wrap with ``functools.wraps``),
    so it follows the view whatever its endpoint is named.
    """

    def declare(view):
        view.read_along = along
        return view

    return declare


def _read_along():
    current = request._get_current_object()
    view = current_app.view_functions.get(current.endpoint)
    along = getattr(view, "read_along", None)
    if along is None or not along.wanted(current):
        return None
    return along


def token_key(user_id, jti):
    return generations.key(generations.TOKENS, user_id, jti)


def is_revoked(jwt_header, jwt_payload):
    """Flask-JWT-Extended's blocklist check.

    Raises ``Unauthorized`` when the token names no account and ``Forbidden``
    when the account is suspended; True when the token was revoked.
    """
    user_id = _user_id(jwt_payload)
    verdict = _cached_verdict(user_id, jwt_payload)
    if verdict == NO_ACCOUNT:
        raise Unauthorized("Could not validate credentials")
    if verdict == SUSPENDED:
        raise Forbidden("Account suspended")
    if verdict == UNVERIFIED:
        if (
            current_app.config["REQUIRE_VERIFIED_EMAIL"]
            and request.blueprint in GATED_BLUEPRINTS
        ):
            raise Forbidden(EMAIL_NOT_VERIFIED)
        return False
    return verdict != ALLOWED


def _user_id(jwt_payload):
    try:
        return int(jwt_payload["sub"])
    except (KeyError, TypeError, ValueError):
        raise Unauthorized("Could not validate credentials") from None


def _cached_verdict(user_id, payload):
    key = token_key(user_id, payload["jti"])
    keys = [generations.gen_key(generations.TOKENS, user_id), key]
    along = _read_along()
    script = None
    if along is not None:
        keys += along.keys(user_id)
        script = along.script(user_id)
    try:
        generation, entry, *extra = generations.read(keys, script)
    except cache_health.CacheUnavailable:
        return verdict_from_database(user_id, payload)
    except cache_health.ERRORS:
        if along is not None:
            along.keep(user_id, None)
        return verdict_from_database(user_id, payload)
    if along is not None:
        along.keep(user_id, extra)
    verdict = generations.unwrap(entry, generation)
    if verdict is not None:
        return verdict
    try:
        if generation is None:
            generation = generations.ensure_generation(generations.TOKENS, user_id)
    except cache_health.ERRORS as e:
        cache_health.current().failed(e)
        generation = None
    # Tried again on a new connection if the node under it dies: every
    # protected request, writes too, begins with this read.
    verdict = transactions.read(lambda: verdict_from_database(user_id, payload))
    if generation is not None:
        expires_in = int(payload["exp"] - time.time()) + 1
        timeout = max(1, min(current_app.config["POSTS_CACHE_TTL"], expires_in))
        generations.store(key, generation, verdict, timeout)
    return verdict


def verdict_from_database(user_id, payload):
    """One SELECT: does the account exist, is it suspended, is the token's
    session live, and is this token still good?

    A token without a session (``sid``) was issued before sessions existed;
    the other checks still hold for it.
    """
    session_id = payload.get(SESSION_CLAIM)
    if session_id is None:
        session_live = True
    elif isinstance(session_id, int):
        session_live = exists().where(
            UserSession.id == session_id,
            UserSession.user_id == user_id,
            UserSession.revoked_at.is_(None),
        )
    else:
        return REVOKED
    row = db.session.execute(
        select(
            User.token_version,
            User.suspended_at,
            User.email_verified_at,
            exists().where(RevokedToken.jti == payload["jti"]),
            session_live if session_live is not True else true(),
        ).where(User.id == user_id)
    ).first()
    # End the read snapshot: a view's later reads must see later commits.
    db.session.rollback()
    if row is None:
        return NO_ACCOUNT
    version, suspended_at, verified_at, logged_out, live = row
    if logged_out or not live or payload.get(VERSION_CLAIM, 0) != version:
        return REVOKED
    if suspended_at is not None:
        return SUSPENDED
    if verified_at is None:
        return UNVERIFIED
    return ALLOWED


def revoke(jwt_payload):
    """Log out one token for the rest of its lifetime (and forget expired ones)."""
    user_id = _user_id(jwt_payload)

    def record():
        now = int(time.time())
        db.session.execute(
            delete(RevokedToken).where(
                RevokedToken.user_id == user_id,
                RevokedToken.expires_at < now - _leeway(),
            )
        )
        db.session.add(
            RevokedToken(
                jti=jwt_payload["jti"],
                user_id=user_id,
                expires_at=int(jwt_payload["exp"]),
            )
        )
        # The session ends with it: its refresh token and its other tokens.
        session_id = jwt_payload.get(SESSION_CLAIM)
        if isinstance(session_id, int):
            db.session.execute(
                update(UserSession)
                .where(
                    UserSession.id == session_id,
                    UserSession.user_id == user_id,
                    UserSession.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            )
        try:
            db.session.commit()
        except IntegrityError:
            # Logged out already (a retried request), or the account is gone.
            db.session.rollback()

    transactions.write(record, user_id=user_id, invalidates=(generations.TOKENS,))


def revoke_all(user_id, *, expected_version=None):
    """Void every token of the user; returns the version new tokens carry.

    With ``expected_version``, only if no other change moved it meanwhile:
    returns None then. Does not commit: run it inside ``transactions.write``.
    """
    statement = update(User).where(User.id == user_id)
    if expected_version is not None:
        statement = statement.where(User.token_version == expected_version)
    changed = db.session.execute(
        statement.values(token_version=User.token_version + 1)
    ).rowcount
    if not changed:
        return None
    # Every session ends: refresh tokens carry the version too, but a session
    # listed as live must be one that still works.
    db.session.execute(
        update(UserSession)
        .where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
        .values(revoked_at=int(time.time()))
    )
    return db.session.scalar(select(User.token_version).where(User.id == user_id))


def _leeway():
    # A token is taken until this long after its exp (the replicas' clocks):
    # its revocation must be kept as long.
    return current_app.config["JWT_DECODE_LEEWAY"]


def purge_expired(now=None):
    """Delete revocations of tokens that have expired anyway; returns how many."""
    now = int(time.time()) if now is None else now
    deleted = db.session.execute(
        delete(RevokedToken).where(RevokedToken.expires_at < now - _leeway())
    ).rowcount
    db.session.commit()
    return deleted


# Where 1.x kept logged-out tokens: Redis alone, under a fixed prefix.
LEGACY_PATTERN = "postservice:revoked:*"
# Its name in upgrade_tasks once it has run.
LEGACY_TASK = "import-legacy"
LEGACY_TIMEOUT = 5.0


def import_legacy():
    """Copy 1.x revocations (``postservice:revoked:<jti>`` in Redis) to the database.

    Those tokens carry no ``ver`` claim and name their user, but 1.x did not
    record whose jti it was, so the rows have no ``user_id``. Returns how
    many were new; running it again adds nothing.
    """
    url = current_app.config["REDIS_URL"]
    if not url:
        return 0
    # Built as the cache's client is, so rediss:// takes the REDIS_SSL_*
    # files. A one-off command: it waits longer than a request would.
    client = clients.connect(
        url,
        timeout=LEGACY_TIMEOUT,
        tls=clients.TLS.from_settings(current_app.config),
    ).client
    try:
        return _import_legacy(client)
    except IntegrityError:
        # Another instance's start imported the same rows first: once more,
        # they are known now.
        db.session.rollback()
        return _import_legacy(client)


def _import_legacy(client):
    now = int(time.time())
    known = set(db.session.scalars(select(RevokedToken.jti)))
    added = 0
    for key in client.scan_iter(match=LEGACY_PATTERN, count=1000):
        jti = key.decode("utf-8", "replace").rpartition(":")[2]
        ttl = client.ttl(key)
        if jti in known or ttl == -2:  # already imported, or expired meanwhile
            continue
        # -1: stored without an expiry, for a token without one; keep a year.
        expires_at = now + (ttl if ttl > 0 else 365 * 24 * 3600)
        db.session.add(RevokedToken(jti=jti, user_id=None, expires_at=expires_at))
        known.add(jti)
        added += 1
    _record_legacy_import(now)
    db.session.commit()
    return added


def _record_legacy_import(now):
    db.session.merge(UpgradeTask(name=LEGACY_TASK, done_at=now))


def legacy_import_needed():
    """Whether the logouts of 1.x must still be imported before the service
    serves: not once the import has run, nor in a deployment without
    accounts, which has no tokens to revoke (recorded as done then, so that
    the accounts made later do not change the answer)."""
    if db.session.get(UpgradeTask, LEGACY_TASK) is not None:
        return False
    if db.session.execute(select(User.id).limit(1)).first() is not None:
        return True
    _record_legacy_import(int(time.time()))
    try:
        db.session.commit()
    except IntegrityError:  # recorded by another instance's start meanwhile
        db.session.rollback()
    return False
