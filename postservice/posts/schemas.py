"""Wire format of the post endpoints."""

import functools
import hashlib
import json
import re

from flask import current_app
from marshmallow import Schema, ValidationError, fields, post_load, validate

from postservice.http.errors import PayloadTooLarge
from postservice.http.parsing import RequestSchema, UnicodeString
from postservice.models import ID_MAX

PAGE_MAX_LIMIT = 1000
PAGE_DEFAULT_LIMIT = 100


class PostText(UnicodeString):
    """Post text, at most ``POST_TEXT_MAX_BYTES`` of UTF-8.

    Too long is 413, not 422, so it is raised as ``PayloadTooLarge`` rather
    than collected as a validation message.
    """

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        limit = current_app.config["POST_TEXT_MAX_BYTES"]
        # Each character is 1 to 4 bytes, so most texts need no encoding to decide.
        if len(text) * 4 > limit and self.utf8_size(text) > limit:
            raise PayloadTooLarge("Text size exceeds 1MB")
        return text


class AddPostSchema(RequestSchema):
    text = PostText(
        required=True,
        blank_ok=False,
        # Documents blank_ok=False: at least one character that is not space.
        metadata={"pattern": r"\S", "description": "at most 1 MiB of UTF-8"},
    )


class EditPostSchema(AddPostSchema):
    """The new text, under the same rules as a new post's."""


class PostCreatedSchema(Schema):
    post_id = fields.Integer(required=True, data_key="PostID")
    detail = fields.String(required=True, dump_default="Post created")


# A post on the wire, defined once: the documented schema below, the columns
# a listing selects and the keys of its JSON bytes all follow from it, in
# this order (``posts.listing``), and so does the cache key's format
# (``posts.cache``). Each name is a column of ``Post``.
POST_WIRE_FORMAT = {
    "id": fields.Integer(required=True),
    "text": fields.String(required=True),
    # RFC 3339 in UTC, whole seconds, ending in Z: "2026-12-06T22:40:00Z".
    "created_at": fields.DateTime(
        required=True, metadata={"description": "When the post was stored (UTC)"}
    ),
    "updated_at": fields.DateTime(
        required=True,
        metadata={"description": "When its text last changed (UTC)"},
    ),
}
POST_FIELDS = tuple(POST_WIRE_FORMAT)
# Raised when a listing's bytes change for a reason the fields do not show
# (their encoding, say), so that no instance serves the old bytes.
LISTING_ENCODING = 1

PostSchema = Schema.from_dict(POST_WIRE_FORMAT, name="PostSchema")


def format_digest(encoding, fields):
    """A short digest of a listing's shape: its encoding and its fields."""
    shape = json.dumps([encoding, list(fields)]).encode()
    return hashlib.sha256(shape).hexdigest()[:8]


@functools.cache
def listing_format():
    """This code's shape of a post and a listing: part of every listing's
    cache key and of every tag (``posts.tags``)."""
    return format_digest(LISTING_ENCODING, POST_FIELDS)


# A page parameter as it is written: ASCII digits, nothing else. int() also
# reads "+5", " 5", "1_0" and digits of other scripts (a full-width 3, U+FF13):
# the document says integer, and only the plain decimal form is one.
ASCII_DIGITS = re.compile(r"[0-9]+")
# More than a page parameter can need (ID_MAX has 19 digits), fewer than
# int() refuses to read: a number of more digits (leading zeros aside) is
# read as 10**MAX_DIGITS, which every page parameter's range refuses.
MAX_DIGITS = 40


class QueryInteger(fields.Integer):
    """A whole number in a query string, written in ASCII digits only."""

    def __init__(self, **kwargs):
        super().__init__(strict=False, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if not (isinstance(value, str) and ASCII_DIGITS.fullmatch(value)):
            raise ValidationError(self.error_messages["invalid"])
        digits = value.lstrip("0") or "0"
        if len(digits) > MAX_DIGITS:
            return 10**MAX_DIGITS  # out of range, and said so by the range
        return super()._deserialize(digits, attr, data, **kwargs)


class PageQuerySchema(RequestSchema):
    """``?limit=N&after_id=K`` on get-posts: one page, ids ascending.

    Without either parameter the listing is not paged (every post, as
    always); with one of them the other takes its default.
    """

    limit = QueryInteger(validate=validate.Range(min=1, max=PAGE_MAX_LIMIT))
    after_id = QueryInteger(validate=validate.Range(min=0, max=ID_MAX))

    @post_load
    def _defaults(self, data, **kwargs):
        if data:
            data.setdefault("limit", PAGE_DEFAULT_LIMIT)
            data.setdefault("after_id", 0)
        return data


# The query parameters that ask for a page rather than the whole listing.
PAGE_PARAMETERS = frozenset(PageQuerySchema().fields)
