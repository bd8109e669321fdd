"""Account rules: registration, login, managing one's account, and the
mailed links: forgotten passwords and verified emails."""

import time

from flask import current_app
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from postservice.auth import revocation, sessions
from postservice.cache import generations
from postservice.db import transactions
from postservice.extensions import db
from postservice.http.errors import APIError, NotFound, Unauthorized
from postservice.mail import messages, outbox, tokens
from postservice.models import User
from postservice.ops import metrics
from postservice.posts import cache as posts_cache
from postservice.users import passwords
from postservice.users.schemas import PASSWORD_MAX_BYTES

# What a change of the account's tokens makes stale: the cached verdicts.
TOKENS = (generations.TOKENS,)


class EmailTaken(APIError):
    def __init__(self):
        super().__init__(400, "User already exists")


class AlreadyVerified(APIError):
    def __init__(self):
        super().__init__(400, "Email already verified")


def hash_password(password):
    return passwords.hash_password(password, current_app.config["BCRYPT_ROUNDS"])


def password_matches(password, password_hash):
    encoded = password.encode()
    # bcrypt 5 raises on more than 72 bytes; no such password was ever stored.
    if len(encoded) > PASSWORD_MAX_BYTES:
        return False
    return passwords.check_password(encoded, password_hash)


def register(*, email, password):
    """Create the account with its first session; returns ``sessions.Issued``.

    Raises ``EmailTaken`` when the email is registered, also when another
    request registers it at the same moment (the unique index decides, or
    on Galera the commit that loses and is tried again), and
    ``transactions.DatabaseBusy`` when the database keeps rolling it back.
    """
    taken = transactions.read(
        lambda: db.session.scalar(select(User.id).where(User.email == email))
    )
    if taken is not None:
        raise EmailTaken()
    db.session.rollback()  # no connection held through the slow hash
    password_hash = hash_password(password)
    # A new account has nothing cached to make stale.
    issued = transactions.write(
        lambda: _create_user(email, password_hash),
        user_id=None,
        invalidates=(),
        after_lost_commit=True,
    )
    metrics.mail_queued(tokens.VERIFY_EMAIL)
    return issued


def _create_user(email, password_hash):
    existing = db.session.execute(
        select(User.id, User.password_hash).where(User.email == email)
    ).first()
    if existing is not None:
        # bcrypt salts every hash: an equal one is this request's own row,
        # committed by a try whose answer the lost connection swallowed.
        if existing.password_hash == password_hash:
            session = sessions.new_session(existing.id)
            db.session.commit()
            return sessions.Issued.of(session, 0)
        raise EmailTaken()
    user = User(email=email, password_hash=password_hash, token_version=0)
    db.session.add(user)
    try:
        db.session.flush()  # the user's id, for its first session
        session = sessions.new_session(user.id)
        # The mail is stored with the account: both exist, or neither.
        _queue_verification(user.id, email)
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise EmailTaken() from None
    return sessions.Issued.of(session, 0)


def log_in(*, email, password):
    """Start a session for the user with these credentials; ``sessions.Issued``.

    Raises ``NotFound`` for an unknown email and ``Unauthorized`` for a
    wrong password, as the API has always answered, and
    ``sessions.Suspended`` for a suspended account, only once the password
    is right: who does not know it learns nothing of the suspension.
    """
    # A password changed while the old one was checked is checked again: the
    # answer is the new password's. Changed again meanwhile: wrong.
    for _ in range(2):
        user_id, password_hash = authenticate(email=email, password=password)
        try:
            return sessions.start(user_id, password_hash)
        except sessions.PasswordChanged:
            continue
    raise Unauthorized("Incorrect password")


def authenticate(*, email, password):
    """``(id, password_hash)`` of the user with these credentials.

    Raises ``NotFound`` for an unknown email and ``Unauthorized`` for a
    wrong password.
    """
    row = transactions.read(
        lambda: db.session.execute(
            select(User.id, User.password_hash).where(User.email == email)
        ).first()
    )
    # Give the connection back before the slow hash: a burst of logins must
    # not hold the pool's connections while they wait for the CPU.
    db.session.rollback()
    if row is None:
        raise NotFound("User not found")
    if not password_matches(password, row.password_hash):
        raise Unauthorized("Incorrect password")
    return row.id, row.password_hash


def account_email(user_id):
    """The account's email: what its password checks are counted under,
    from login and from its own routes alike (``throttling``).

    Raises ``Unauthorized`` when the account is gone.
    """
    email = transactions.read(
        lambda: db.session.scalar(select(User.email).where(User.id == user_id))
    )
    db.session.rollback()
    if email is None:
        raise Unauthorized("Could not validate credentials")
    return email


def _verified_account(user_id, password):
    """``(password_hash, token_version)`` once ``password`` is the user's.

    Raises ``Unauthorized``: "Incorrect password", or when the account is gone.
    """
    row = transactions.read(
        lambda: db.session.execute(
            select(User.password_hash, User.token_version).where(User.id == user_id)
        ).first()
    )
    db.session.rollback()  # the connection goes back to the pool for the hash
    if row is None:
        raise Unauthorized("Could not validate credentials")
    if not password_matches(password, row.password_hash):
        raise Unauthorized("Incorrect password")
    return row


def change_password(*, user_id, current_password, new_password):
    """Set a new password, end every session and start a new one.

    Returns the new session's ``sessions.Issued``.

    Raises ``Unauthorized`` for a wrong current password, and when another
    change to the account's tokens won the race (the caller's token is void).
    """
    row = _verified_account(user_id, current_password)
    new_hash = hash_password(new_password)

    def change():
        version = revocation.revoke_all(user_id, expected_version=row.token_version)
        if version is None:
            db.session.rollback()
            raise Unauthorized("Token has been revoked")
        db.session.execute(
            update(User).where(User.id == user_id).values(password_hash=new_hash)
        )
        # Reset links mailed or asked for before end too: whoever read the
        # inbox must not set a password after the owner changed it.
        _end_reset_links(user_id)
        session = sessions.new_session(user_id)
        db.session.commit()
        return sessions.Issued.of(session, version)

    return transactions.write(change, user_id=user_id, invalidates=TOKENS)


def log_out_everywhere(*, user_id):
    """Void every token of the user and end every session.

    Raises ``Unauthorized`` when the account is gone.
    """

    def log_out():
        if revocation.revoke_all(user_id) is None:
            db.session.rollback()
            raise Unauthorized("Could not validate credentials")
        _end_reset_links(user_id)
        db.session.commit()

    transactions.write(log_out, user_id=user_id, invalidates=TOKENS)


def delete_account(*, user_id, password):
    """Delete the account, its posts, sessions and revocations; every token is void.

    Raises ``Unauthorized`` for a wrong password.
    """
    _verified_account(user_id, password)
    remove_account(user_id)


def remove_account(user_id):
    """Delete the account and everything of it (posts go by the foreign key).

    Returns False when there was no such account.
    """

    def remove():
        deleted = db.session.execute(delete(User).where(User.id == user_id)).rowcount
        db.session.commit()
        return bool(deleted)

    # The listing's bytes are deleted, not only made stale: a deleted
    # account's posts must not stay in Redis until their entry expires.
    return transactions.write(
        remove,
        user_id=user_id,
        invalidates=(generations.TOKENS, generations.POSTS),
        drop=posts_cache.keys(user_id),
    )


def find_id(email):
    """The id of the account with ``email`` (normalised), or None."""
    return db.session.scalar(select(User.id).where(User.email == email))


def get_user(user_id):
    """The caller's account.

    Raises ``Unauthorized`` when it no longer exists: the token names no one.
    """
    user = db.session.get(User, user_id)
    if user is None:
        raise Unauthorized("Could not validate credentials")
    return user


def _queue_verification(user_id, email):
    """A verification token and its mail, added to the transaction."""
    token = tokens.issue(
        user_id,
        tokens.VERIFY_EMAIL,
        current_app.config["EMAIL_VERIFICATION_TOKEN_EXPIRES"],
    )
    subject, text, html = messages.render(tokens.VERIFY_EMAIL, token)
    outbox.add(tokens.VERIFY_EMAIL, email, subject, text, html)


def request_password_reset(*, email):
    """Queue a reset mail for ``email``, whether an account has it or not.

    The request does the same work for every email, one INSERT and its
    commit, so neither its answer nor its time tells whether the account
    exists: the worker looks the account up, issues the token and renders
    the mail, or drops the request (``mail.delivery.prepare``).
    """

    def queue():
        outbox.add(tokens.PASSWORD_RESET, email)
        db.session.commit()

    transactions.run(queue)
    metrics.mail_queued(tokens.PASSWORD_RESET)


def reset_password(*, token, new_password):
    """Set a new password with a mailed reset token; ends every session.

    Every token of the account is void afterwards, the other reset tokens
    too; nobody is logged in (the owner logs in with the new password).
    The address received the mail, so it counts as verified. Raises
    ``tokens.InvalidToken`` for a token that is malformed, altered,
    expired or used (checked before the slow hash, and again, atomically,
    as it is used).
    """
    tokens.holder(token, tokens.PASSWORD_RESET)
    new_hash = hash_password(new_password)

    def reset():
        now = int(time.time())
        try:
            user_id = tokens.use(token, tokens.PASSWORD_RESET, now)
        except tokens.InvalidToken:
            db.session.rollback()
            raise
        if revocation.revoke_all(user_id) is None:  # the account went meanwhile
            db.session.rollback()
            raise tokens.InvalidToken()
        db.session.execute(
            update(User)
            .where(User.id == user_id)
            .values(password_hash=new_hash)
            .execution_options(synchronize_session=False)
        )
        _mark_verified(user_id, now)
        _end_reset_links(user_id, now)
        db.session.commit()
        return user_id

    user_id = transactions.run(reset)
    transactions.invalidate(user_id, TOKENS)


def _end_reset_links(user_id, now=None):
    """Void every reset link of the account, mailed or still a request in
    the outbox (not committed)."""
    tokens.end_all(user_id, tokens.PASSWORD_RESET, now)
    outbox.discard_requests(tokens.PASSWORD_RESET, user_id)


def _mark_verified(user_id, now):
    db.session.execute(
        update(User)
        .where(User.id == user_id, User.email_verified_at.is_(None))
        .values(email_verified_at=now)
        .execution_options(synchronize_session=False)
    )


def verify_email(*, token):
    """Mark the account's email verified with a mailed token.

    Raises ``tokens.InvalidToken`` for a token that is malformed, altered,
    expired or used.
    """

    def verify():
        now = int(time.time())
        try:
            user_id = tokens.use(token, tokens.VERIFY_EMAIL, now)
        except tokens.InvalidToken:
            db.session.rollback()
            raise
        _mark_verified(user_id, now)
        db.session.commit()
        return user_id

    user_id = transactions.run(verify)
    # Token verdicts say "unverified": they are stale now.
    transactions.invalidate(user_id, TOKENS)


def resend_verification(*, user_id):
    """Queue a new verification mail for the account.

    Raises ``AlreadyVerified`` when there is nothing to verify, and
    ``Unauthorized`` when the account is gone.
    """

    def queue():
        row = db.session.execute(
            select(User.email, User.email_verified_at).where(User.id == user_id)
        ).first()
        if row is None:
            db.session.rollback()
            raise Unauthorized("Could not validate credentials")
        if row.email_verified_at is not None:
            db.session.rollback()
            raise AlreadyVerified()
        _queue_verification(user_id, row.email)
        db.session.commit()

    transactions.run(queue)
    metrics.mail_queued(tokens.VERIFY_EMAIL)
