"""Account rules: registration and login."""

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .. import transactions
from ..errors import APIError, NotFound, Unauthorized
from ..extensions import db
from ..models import User
from . import passwords
from .schemas import PASSWORD_MAX_BYTES


class EmailTaken(APIError):
    def __init__(self):
        super().__init__(400, "User already exists")


def hash_password(password):
    return passwords.hash_password(password, current_app.config["BCRYPT_ROUNDS"])


def password_matches(password, password_hash):
    encoded = password.encode()
    # bcrypt 5 raises on more than 72 bytes; no such password was ever stored.
    if len(encoded) > PASSWORD_MAX_BYTES:
        return False
    return passwords.check_password(encoded, password_hash)


def register(*, email, password):
    """Create the account and return its id.

    Raises ``EmailTaken`` when the email is registered, also when another
    request registers it at the same moment (the unique index decides, or
    on Galera the commit that loses and is tried again), and
    ``transactions.DatabaseBusy`` when the database keeps rolling it back.
    """
    if db.session.scalar(select(User.id).where(User.email == email)) is not None:
        raise EmailTaken()
    db.session.rollback()  # no connection held through the slow hash
    password_hash = hash_password(password)
    return transactions.run(
        lambda: _create_user(email, password_hash), after_lost_commit=True
    )


def _create_user(email, password_hash):
    existing = db.session.execute(
        select(User.id, User.password_hash).where(User.email == email)
    ).first()
    if existing is not None:
        # bcrypt salts every hash: an equal one is this request's own row,
        # committed by a try whose answer the lost connection swallowed.
        if existing.password_hash == password_hash:
            return existing.id
        raise EmailTaken()
    user = User(email=email, password_hash=password_hash)
    db.session.add(user)
    try:
        db.session.flush()
        user_id = user.id
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise EmailTaken() from None
    return user_id


def authenticate(*, email, password):
    """The id of the user with these credentials.

    Raises ``NotFound`` for an unknown email and ``Unauthorized`` for a
    wrong password, as the API has always answered.
    """
    row = db.session.execute(
        select(User.id, User.password_hash).where(User.email == email)
    ).first()
    # Give the connection back before the slow hash: a burst of logins must
    # not hold the pool's connections while they wait for the CPU.
    db.session.rollback()
    if row is None:
        raise NotFound("User not found")
    if not password_matches(password, row.password_hash):
        raise Unauthorized("Incorrect password")
    return row.id


def get_user(user_id):
    """The caller's account.

    Raises ``Unauthorized`` when it no longer exists: the token names no one.
    """
    user = db.session.get(User, user_id)
    if user is None:
        raise Unauthorized("Could not validate credentials")
    return user
