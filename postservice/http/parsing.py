"""Reading requests: JSON bodies and query strings through marshmallow schemas.

The views declare what they read with ``@bp.arguments``; webargs does the
reading, through ``RequestParser``, which keeps the API's own answers where
webargs' defaults differ: a body not sent as JSON is 415 (webargs reads it
as ``{}``), malformed or over-deep JSON is 400 with our ``detail`` (not
webargs' message), a body in UTF-16 or UTF-32 is 400 (``json.loads`` would
guess the encoding), and the 422's ``errors`` name the fields themselves,
not nested under ``json`` or ``query``.
"""

import json
import re

from flask import Request
from flask.json.provider import DefaultJSONProvider
from marshmallow import EXCLUDE, Schema, ValidationError, fields
from webargs.flaskparser import FlaskParser

from postservice.http.errors import APIError

UTF8 = ("utf-8", "utf-8-sig")
GIVEN_TWICE = "Given more than once."


class NotUTF8(ValueError):
    """The body is JSON in another encoding (UTF-16 or UTF-32)."""


class NestedTooDeeply(ValueError):
    """The body nests arrays or objects deeper than the decoder recurses."""


def _not_json(constant):
    # json.loads reads NaN, Infinity and -Infinity, which JSON does not have
    # (RFC 8259): such a body is refused as any other that is not JSON.
    raise ValueError(f"{constant} is not JSON")


class JSONProvider(DefaultJSONProvider):
    """The app's JSON: decodes UTF-8 only, refuses ``NaN`` and the
    infinities, and reports depth as a ValueError.

    Request bodies are decoded with it, so each failure reaches
    ``JSONRequest.on_json_loading_failed``, also for ``get_json(silent=True)``.
    """

    def loads(self, s, **kwargs):
        # json.loads guesses UTF-16 and UTF-32 from bytes; JSON between
        # systems is UTF-8 (RFC 8259), so anything else is refused.
        if isinstance(s, bytes) and json.detect_encoding(s) not in UTF8:
            raise NotUTF8
        kwargs.setdefault("parse_constant", _not_json)
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            # json raises this, not ValueError, for very deeply nested input.
            raise NestedTooDeeply from None


class JSONRequest(Request):
    """Reports an unusable JSON body in our error shape instead of Flask's HTML."""

    @property
    def is_json(self):
        # Flask also takes application/*+json (a JSON Patch, a merge patch),
        # which are other formats with other meanings: the API reads
        # application/json alone, as documented, and answers others 415.
        return self.mimetype == "application/json"

    def get_json(self, force=False, silent=False, cache=True):
        # The body is read as it came; a compressed one would fail to parse
        # (400, as if the JSON were broken) or, when the label is wrong,
        # be taken on trust: a coding is refused instead (RFC 9110, 15.5.16).
        coding = self.headers.get("Content-Encoding")
        if coding is not None and coding.strip(" \t").lower() not in ("", "identity"):
            raise APIError(
                415,
                "Content-Encoding is not supported",
                headers={"Accept-Encoding": "identity"},
            )
        return super().get_json(force=force, silent=silent, cache=cache)

    def on_json_loading_failed(self, e):
        if e is None:
            raise APIError(415, "Content-Type must be application/json")
        if isinstance(e, NotUTF8):
            raise APIError(400, "Request body must be encoded as UTF-8")
        if isinstance(e, NestedTooDeeply):
            raise APIError(400, "Request body is nested too deeply")
        raise APIError(400, "Request body is not valid JSON in UTF-8")


class RequestParser(FlaskParser):
    """webargs' parser with the API's errors (see the module's docstring)."""

    def load_json(self, req, schema):
        # Raises APIError (415, 400) through JSONRequest; never "missing".
        return req.get_json()

    def load_querystring(self, req, schema):
        # A parameter given twice (?limit=1&limit=x) has no one value:
        # webargs would take the first and never look at the rest.
        args = req.args
        repeated = [name for name in schema.fields if len(args.getlist(name)) > 1]
        if repeated:
            raise ValidationError({name: [GIVEN_TWICE] for name in repeated})
        return super().load_querystring(req, schema)

    def handle_error(self, error, req, schema, *, error_status_code, error_headers):
        # webargs has put the messages under the location; take them out.
        (messages,) = error.messages.values()
        raise ValidationError(messages)


class RequestSchema(Schema):
    class Meta:
        # Clients may send fields a later version understands; they are ignored.
        unknown = EXCLUDE


# White space as JSON Schema's ``\S`` (an ECMAScript pattern) knows it, so
# that what the document allows is what is accepted. Python's own idea is
# wider: str.strip() also drops the control characters U+001C to U+001F.
BLANK = re.compile(
    "[\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]*"
)


class UnicodeString(fields.String):
    """A string that can be stored: JSON allows lone surrogates, UTF-8 does not.

    ``blank_ok=False`` also refuses strings made only of white space.
    """

    def __init__(self, *args, blank_ok=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.blank_ok = blank_ok

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        self.utf8_size(text)
        if not self.blank_ok and BLANK.fullmatch(text):
            raise ValidationError("Must not be empty.")
        return text

    @staticmethod
    def utf8_size(text):
        try:
            return len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValidationError("Not valid Unicode text.") from None


class MaxUtf8Bytes:
    """A validator: at most ``limit`` bytes once encoded as UTF-8."""

    def __init__(self, limit):
        self.limit = limit

    def __call__(self, value):
        if UnicodeString.utf8_size(value) > self.limit:
            raise ValidationError(f"Longer than {self.limit} bytes in UTF-8.")
