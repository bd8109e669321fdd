"""Post endpoints: /api/v1/posts/..., all for the caller's own posts."""

from flask import Blueprint, Response
from flask_jwt_extended import jwt_required

from ..auth import current_user_id
from ..models import ID_MAX
from ..validation import load_body
from . import service
from .schemas import AddPostSchema, PostCreatedSchema

bp = Blueprint("posts", __name__, url_prefix="/api/v1/posts")

add_post_schema = AddPostSchema()
post_created_schema = PostCreatedSchema()


@bp.post("/add-post")
@jwt_required()
def add_post():
    post_id = service.add_post(user_id=current_user_id(), **load_body(add_post_schema))
    return post_created_schema.dump({"post_id": post_id})


@bp.get("/get-posts")
@jwt_required()
def get_posts():
    body = service.listing_json(user_id=current_user_id())
    return Response(body, mimetype="application/json")


# Larger ids cannot exist and would overflow SQLite's integer binding: 404.
@bp.delete(f"/delete-post/<int(max={ID_MAX}):post_id>")
@jwt_required()
def delete_post(post_id):
    service.delete_post(user_id=current_user_id(), post_id=post_id)
    response = Response(status=204)
    del response.headers["Content-Type"]  # there is no content to have a type
    return response
