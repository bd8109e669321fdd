"""Post rules: adding, listing and deleting a user's own posts."""

import json

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from ..errors import NotFound, Unauthorized
from ..extensions import db
from ..models import Post
from . import cache
from .schemas import PostSchema

posts_schema = PostSchema(many=True)


def add_post(*, user_id, text):
    """Store the post and return its id; the user's cached listing is invalidated.

    Raises ``Unauthorized`` when the token's user no longer exists.
    """
    post = Post(user_id=user_id, text=text)
    db.session.add(post)
    try:
        db.session.commit()
    except IntegrityError:  # the foreign key: the account was deleted
        db.session.rollback()
        raise Unauthorized("Could not validate credentials") from None
    cache.invalidate(user_id)
    return post.id


def delete_post(*, user_id, post_id):
    """Delete the post.

    Raises ``NotFound`` when it does not exist or belongs to someone else:
    the two are indistinguishable so ids of other users' posts do not leak.
    """
    deleted = db.session.execute(
        delete(Post).where(Post.id == post_id, Post.user_id == user_id)
    ).rowcount
    db.session.commit()
    if not deleted:
        raise NotFound("Post not found")
    cache.invalidate(user_id)


def listing_json(*, user_id):
    """The user's posts, oldest first, as the JSON bytes of the response."""
    return cache.listing(user_id, lambda: _render_listing(user_id))


def _render_listing(user_id):
    rows = db.session.execute(
        select(Post.id, Post.text).where(Post.user_id == user_id).order_by(Post.id)
    )
    posts = posts_schema.dump(rows.mappings())
    db.session.rollback()  # end the read snapshot; nothing was written
    return json.dumps(posts, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
