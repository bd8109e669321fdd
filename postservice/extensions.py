"""Extension objects, created without an app; ``create_app`` binds them."""

from flask import current_app
from flask_caching import Cache as BaseCache
from flask_mailman import Mail
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

from postservice.auth.memo import MemoizingJWTManager

# Named constraints give migrations stable, reviewable names on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Cache(BaseCache):
    """Flask-Caching's ``Cache``, finding the app's backend in one lookup of
    the app context (``current_app or self.app`` takes two), on every cache
    call of every request."""

    @property
    def cache(self):
        try:
            app = current_app._get_current_object()
        except RuntimeError:  # no app context: the app given to the constructor
            app = self.app
        return app.extensions["cache"][self]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# Objects keep their values after a commit. Otherwise reading ``post.id`` to
# answer would start a new transaction with a SELECT, and a database lost at
# that moment would turn an already committed write into an error.
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
migrate = Migrate()
jwt = MemoizingJWTManager()
cache = Cache()
mail = Mail()
