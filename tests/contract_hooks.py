"""Schemathesis hooks for the contract check (loaded via SCHEMATHESIS_HOOKS).

bcrypt reads at most 72 bytes, so registration refuses longer passwords.
JSON Schema counts characters, not bytes: the document says ``maxLength: 72``
and describes the byte limit, and schema-valid passwords over 72 bytes of
UTF-8 are left out here rather than relaxing the positive-data check.
"""

import schemathesis

from postservice.users.schemas import PASSWORD_MAX_BYTES

REGISTER = "/api/v1/users/register"


@schemathesis.hook
def filter_body(ctx, body):
    if ctx.operation is None or ctx.operation.path != REGISTER:
        return True
    password = body.get("password") if isinstance(body, dict) else None
    if not isinstance(password, str):
        return True
    try:
        return len(password.encode("utf-8")) <= PASSWORD_MAX_BYTES
    except UnicodeEncodeError:  # a lone surrogate: refused as invalid anyway
        return True
