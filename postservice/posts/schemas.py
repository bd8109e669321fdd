"""Wire format of the post endpoints."""

from flask import current_app
from marshmallow import Schema, fields

from ..errors import PayloadTooLarge
from ..validation import RequestSchema, UnicodeString


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


class PostCreatedSchema(Schema):
    post_id = fields.Integer(required=True, data_key="PostID")
    detail = fields.String(required=True, dump_default="Post created")


class PostSchema(Schema):
    id = fields.Integer(required=True)
    text = fields.String(required=True)
