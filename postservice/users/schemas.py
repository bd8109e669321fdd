"""Wire format of the account endpoints."""

from marshmallow import Schema, ValidationError, fields, validate

from postservice.http.parsing import MaxUtf8Bytes, RequestSchema, UnicodeString
from postservice.mail.addresses import mailable

PASSWORD_MIN_CHARS = 8
# bcrypt reads at most 72 bytes; bcrypt 5 raises beyond that instead of
# truncating, so longer passwords are refused rather than silently cut.
PASSWORD_MAX_BYTES = 72
EMAIL_MAX_CHARS = 254


class NormalizedEmail(fields.Email):
    """An email address, trimmed and lower-cased so lookups ignore case.

    ``mailable``: only an address mail reaches as it is written
    (``mail.addresses.mailable``); for a new account, whose address is
    mailed to. Looking up an existing account takes any address.
    """

    def __init__(self, *, mailable=False, **kwargs):
        # The length is checked in _deserialize; the document still states it.
        metadata = {"maxLength": EMAIL_MAX_CHARS}
        if mailable:
            metadata["description"] = (
                "an address mail reaches as written: before the @, printable "
                "ASCII; no =?...?= word; a domain in ASCII or IDNA's own spelling"
            )
        kwargs.setdefault("metadata", metadata)
        super().__init__(**kwargs)
        self.mailable = mailable

    def _deserialize(self, value, attr, data, **kwargs):
        email = super()._deserialize(value, attr, data, **kwargs).strip().lower()
        UnicodeString.utf8_size(email)
        # Checked here, before the address pattern runs on arbitrarily long input.
        if len(email) > EMAIL_MAX_CHARS:
            raise ValidationError(f"Longer than {EMAIL_MAX_CHARS} characters.")
        if self.mailable and not mailable(email):
            raise self.make_error("invalid")
        return email


def new_password():
    """A password as registration accepts it."""
    return UnicodeString(
        required=True,
        validate=[
            validate.Length(min=PASSWORD_MIN_CHARS),
            MaxUtf8Bytes(PASSWORD_MAX_BYTES),
            # bcrypt cycles the password and a NUL over its 72-byte key:
            # "abcd\0abcd" makes the key "abcd" makes, and "abcd" opens it.
            validate.ContainsNoneOf(["\x00"], error="Must not contain NUL."),
        ],
        # JSON Schema counts characters; the limit is bytes, so say both.
        metadata={
            "maxLength": PASSWORD_MAX_BYTES,
            "pattern": "^[^\\u0000]*$",
            "description": f"at most {PASSWORD_MAX_BYTES} bytes of UTF-8, no NUL",
        },
    )


def given_password():
    """A password to check: any non-empty string, since one that could never
    have been registered is simply wrong (401), not invalid input."""
    return UnicodeString(required=True, validate=validate.Length(min=1))


class RegisterSchema(RequestSchema):
    email = NormalizedEmail(required=True, mailable=True)
    password = new_password()


class LoginSchema(RequestSchema):
    email = NormalizedEmail(required=True)
    password = given_password()


class ChangePasswordSchema(RequestSchema):
    current_password = given_password()
    new_password = new_password()


class DeleteAccountSchema(RequestSchema):
    password = given_password()


class UserSchema(Schema):
    id = fields.Integer(required=True)
    email = fields.String(required=True, metadata={"format": "email"})
    email_verified = fields.Boolean(
        required=True,
        metadata={"description": "whether the owner opened a link mailed there"},
    )


def mailed_token():
    """A token from a mailed link. Any string is taken: one that was never
    issued is answered 400 "Invalid or expired token", like an expired one."""
    return UnicodeString(
        required=True,
        metadata={"description": "the token of the link's query"},
    )


class PasswordResetSchema(RequestSchema):
    email = NormalizedEmail(required=True)


class PasswordResetConfirmSchema(RequestSchema):
    token = mailed_token()
    new_password = new_password()


class VerifyEmailSchema(RequestSchema):
    token = mailed_token()


class AcceptedSchema(Schema):
    detail = fields.String(required=True)


# A token of this service is a few hundred characters; far more is not one.
REFRESH_TOKEN_MAX_CHARS = 4096


class RefreshSchema(RequestSchema):
    refresh_token = UnicodeString(
        required=True,
        validate=validate.Length(min=1, max=REFRESH_TOKEN_MAX_CHARS),
        metadata={"description": "the refresh token of the last token pair"},
    )


class SessionSchema(Schema):
    """A session: a login and the refresh tokens that followed from it."""

    id = fields.Integer(required=True)
    created_at = fields.String(
        required=True,
        metadata={"format": "date-time", "description": "RFC 3339, UTC"},
    )
    last_used_at = fields.String(
        required=True,
        metadata={
            "format": "date-time",
            "description": "the last login or refresh; RFC 3339, UTC",
        },
    )
    current = fields.Boolean(
        required=True,
        metadata={"description": "whether the token of this request is of it"},
    )
    user_agent = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "the User-Agent of the login, cut to 255"},
    )
