"""A JWTManager that verifies each token string once, not on every request.

PyJWT decodes a token four times per request under Flask-JWT-Extended
(headers, unverified claims, verified claims, then the headers again for
the view) and checks every base64 character of every segment in Python:
a large share of the cost of a cached get-posts. A token is immutable, so
once a given string has passed every check, the only thing that can change
is the clock. This manager remembers the claims and the header of tokens that
verified, per app, and on a later request with the same string only checks
``exp`` again; an expired or unknown token goes through the full decode, so
every 401 is exactly as before. Everything Flask-JWT-Extended does after
decoding (token type, revocation and user loaders) still runs on every
request, because only the decoding is remembered.
"""

import threading
import time

import jwt
from flask import current_app
from flask_jwt_extended import JWTManager, utils, view_decorators

MEMO_SIZE = 10_000  # tokens remembered per app; the oldest is forgotten first


class MemoizingJWTManager(JWTManager):
    def init_app(self, app, *args, **kwargs):
        super().init_app(app, *args, **kwargs)
        # token string: (claims, header), for tokens that passed every check
        app.extensions["verified_tokens"] = {}
        # Changes are locked: evicting iterates the dict, which raises if
        # another thread resizes it meanwhile. Hits only read, unlocked.
        app.extensions["verified_tokens_lock"] = threading.Lock()
        # Right after decoding, the request path asks PyJWT for the token's
        # header through this module-level name; there is no hook for it.
        # tests/test_pins.py fails if a release stops calling it so.
        view_decorators.get_unverified_jwt_headers = remembered_header

    def _decode_jwt_from_config(
        self, encoded_token, csrf_value=None, allow_expired=False
    ):
        if csrf_value is not None or allow_expired:
            return super()._decode_jwt_from_config(
                encoded_token, csrf_value, allow_expired
            )
        app = current_app._get_current_object()  # one context lookup
        extensions = app.extensions
        memo = extensions["verified_tokens"]
        entry = memo.get(encoded_token)
        leeway = app.config["JWT_DECODE_LEEWAY"]
        if entry is not None:
            claims = entry[0]
            if "exp" not in claims or time.time() < claims["exp"] + leeway:
                return dict(claims)  # callers may keep and change theirs
            with extensions["verified_tokens_lock"]:
                memo.pop(encoded_token, None)
        claims = super()._decode_jwt_from_config(encoded_token, csrf_value, False)
        entry = (dict(claims), jwt.get_unverified_header(encoded_token))
        with extensions["verified_tokens_lock"]:
            if len(memo) >= MEMO_SIZE:
                memo.pop(next(iter(memo)))
            memo[encoded_token] = entry
        return claims


def remembered_header(encoded_token):
    """The header of a token that verified, else PyJWT's (unverified) reading."""
    entry = current_app.extensions.get("verified_tokens", {}).get(encoded_token)
    if entry is None:
        return utils.get_unverified_jwt_headers(encoded_token)
    return dict(entry[1])
