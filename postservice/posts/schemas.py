"""Wire format of the post endpoints."""

from flask import current_app

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
    text = PostText(required=True, blank_ok=False)
