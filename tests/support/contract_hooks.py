"""Schemathesis hooks for the contract check (loaded via SCHEMATHESIS_HOOKS).

bcrypt reads at most 72 bytes, so registration, change-password and the
password reset refuse longer passwords.
JSON Schema counts characters, not bytes: the document says ``maxLength: 72``
and describes the byte limit, and schema-valid passwords over 72 bytes of
UTF-8 are left out here rather than relaxing the positive-data check.

An ``Idempotency-Key`` is one client's name for one post: the same key
with another text is refused (422). Generated keys repeat across cases
with different texts, so each valid one is made unique before it is sent;
malformed ones are sent as generated.

Generated headers never frame the message (Content-Length,
Transfer-Encoding): a length the body does not have makes the server wait,
as HTTP requires, for bytes that never come, and the run fails on its own
timeout. What the server answers to malformed framing is documented on
every operation and sent to each by tests/server/test_server_answers.py.
"""

import uuid

import schemathesis

from postservice.posts import idempotency
from postservice.users.schemas import PASSWORD_MAX_BYTES

FRAMING = frozenset({"content-length", "transfer-encoding"})

# The password each operation stores, by path.
NEW_PASSWORD = {
    "/api/v1/users/register": "password",
    "/api/v1/users/change-password": "new_password",
    "/api/v1/users/password-reset/confirm": "new_password",
}


@schemathesis.hook
def filter_body(ctx, body):
    field = NEW_PASSWORD.get(ctx.operation.path) if ctx.operation else None
    password = body.get(field) if field and isinstance(body, dict) else None
    if not isinstance(password, str):
        return True
    try:
        return len(password.encode("utf-8")) <= PASSWORD_MAX_BYTES
    except UnicodeEncodeError:  # a lone surrogate: refused as invalid anyway
        return True


@schemathesis.hook
def filter_headers(ctx, headers):
    return not isinstance(headers, dict) or FRAMING.isdisjoint(
        str(name).lower() for name in headers
    )


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    key = (case.headers or {}).get(idempotency.HEADER)
    if isinstance(key, str) and idempotency.VALID_KEY.fullmatch(key):
        case.headers[idempotency.HEADER] = uuid.uuid4().hex
