"""Reading request bodies through marshmallow schemas, and the fields they share."""

from flask import request
from marshmallow import EXCLUDE, Schema, ValidationError, fields

from .errors import APIError


class RequestSchema(Schema):
    class Meta:
        # Clients may send fields a later version understands; they are ignored.
        unknown = EXCLUDE


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
        if not self.blank_ok and not text.strip():
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


def load_body(schema):
    """The request's JSON body, validated by ``schema``.

    Raises ``APIError`` (415 not JSON, 400 malformed) or ``ValidationError`` (422).
    """
    try:
        payload = request.get_json()
    except RecursionError:
        # json raises this, not ValueError, for very deeply nested input.
        raise APIError(400, "Request body is nested too deeply") from None
    return schema.load(payload)


def load_query(schema):
    """The request's query string, validated by ``schema``.

    Raises ``ValidationError`` (422).
    """
    return schema.load(request.args.to_dict())
