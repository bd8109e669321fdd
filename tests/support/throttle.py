"""Apps with limits of their own, counted apart from every other test's."""

import secrets


def limited_app(make_app, storage, **settings):
    """An app counting in ``storage`` under a fresh key prefix."""
    return make_app(
        REDIS_KEY_PREFIX="test-" + secrets.token_hex(8), **storage, **settings
    )
