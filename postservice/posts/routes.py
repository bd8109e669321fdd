"""Post endpoints: /api/v1/posts/..., all for the caller's own posts."""

from flask import Blueprint, Response, request, stream_with_context, url_for
from flask_jwt_extended import jwt_required

from ..auth import current_user_id
from ..models import ID_MAX
from ..validation import load_body, load_query
from . import idempotency, service
from .schemas import AddPostSchema, PageQuerySchema, PostCreatedSchema

bp = Blueprint("posts", __name__, url_prefix="/api/v1/posts")

add_post_schema = AddPostSchema()
post_created_schema = PostCreatedSchema()
page_query_schema = PageQuerySchema()


@bp.post("/add-post")
@jwt_required()
def add_post():
    post_id = service.add_post(
        user_id=current_user_id(),
        idempotency_key=request.headers.get(idempotency.HEADER),
        **load_body(add_post_schema),
    )
    return post_created_schema.dump({"post_id": post_id})


@bp.get("/get-posts")
@jwt_required()
def get_posts():
    user_id = current_user_id()
    # Most requests have no query string: skip the schema for them.
    page = load_query(page_query_schema) if request.args else None
    if not page:
        return _json_response(service.listing_body(user_id=user_id))
    body, next_after_id = service.page_body(user_id=user_id, **page)
    response = _json_response(body)
    if next_after_id is not None:
        # A relative reference (RFC 8288 allows it): no trust in the Host header.
        url = url_for(".get_posts", limit=page["limit"], after_id=next_after_id)
        response.headers["Link"] = f'<{url}>; rel="next"'
    return response


def _json_response(body):
    """Bytes as they are; a stream of chunks keeps the request context to its end."""
    if not isinstance(body, bytes):
        body = stream_with_context(body)
    return Response(body, mimetype="application/json")


# Larger ids cannot exist and would overflow SQLite's integer binding: 404.
@bp.delete(f"/delete-post/<int(max={ID_MAX}):post_id>")
@jwt_required()
def delete_post(post_id):
    service.delete_post(user_id=current_user_id(), post_id=post_id)
    response = Response(status=204)
    del response.headers["Content-Type"]  # there is no content to have a type
    return response
