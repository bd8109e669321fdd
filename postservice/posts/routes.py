"""Post endpoints: /api/v1/posts/..., all for the caller's own posts."""

from flask import Response, request, stream_with_context, url_for

from postservice.auth.revocation import reads_along
from postservice.auth.tokens import current_user_id
from postservice.http.api import Blueprint
from postservice.models import ID_MAX
from postservice.posts import cache, idempotency, service
from postservice.posts.schemas import (
    AddPostSchema,
    PageQuerySchema,
    PostCreatedSchema,
    PostSchema,
)

bp = Blueprint(
    "posts", __name__, url_prefix="/api/v1/posts", description="The caller's posts"
)

page_query_schema = PageQuerySchema()
DATABASE_DOWN = "The database is unavailable"


@bp.post("/add-post")
@bp.protected
@bp.arguments(AddPostSchema)
@bp.response(200, PostCreatedSchema, description="Created")
@bp.doc(parameters=[idempotency.HEADER_DOC])
@bp.alt_response(
    413, description="The text is over 1 MiB of UTF-8, or the body over 8 MiB"
)
@bp.alt_response(
    422,
    description="Invalid input: `errors` names each field, or the "
    "Idempotency-Key header (malformed, or used before with another text)",
)
@bp.alt_response(
    503, description=DATABASE_DOWN + ", or kept rolling the write back; retry"
)
def add_post(body):
    """Add a post

    Send an `Idempotency-Key` to retry safely: the same key again answers the
    post stored the first time.
    """
    post_id = service.add_post(
        user_id=current_user_id(),
        idempotency_key=request.headers.get(idempotency.HEADER),
        **body,
    )
    return {"post_id": post_id}


# The hottest route answers ready bytes from the cache: its query and answer
# are documented here, but not parsed and dumped by decorators, whose layers
# every request would pay for (bench/get_posts_micro.py --decorated).
@bp.get("/get-posts")
@bp.protected
@reads_along(cache.READ_ALONG)  # a hit: one round trip for token and listing
@bp.doc(parameters=[{"in": "query", "schema": PageQuerySchema}])
@bp.alt_response(
    200, schema=PostSchema(many=True), description="The posts", success=True
)
@bp.alt_response(
    422,
    description="`limit` or `after_id` is not a whole number in range, in ASCII digits",
)
@bp.alt_response(503, description=DATABASE_DOWN)
def get_posts():
    """List the caller's posts, oldest first

    Without parameters, every post. With `limit` (1 to 1000, default 100)
    and/or `after_id` (default 0), one page of posts with ids above
    `after_id`, and a `Link: <url>; rel="next"` header when more may follow.
    """
    user_id = current_user_id()
    # Most requests have no query string: skip the schema for them.
    page = (
        bp.ARGUMENTS_PARSER.parse(page_query_schema, location="query")
        if request.args
        else None
    )
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
@bp.protected
@bp.response(204, description="Deleted")
@bp.alt_response(404, description="No such post, or it is someone else's")
@bp.alt_response(503, description=DATABASE_DOWN)
def delete_post(post_id):
    """Delete one of the caller's posts"""
    service.delete_post(user_id=current_user_id(), post_id=post_id)
    response = Response(status=204)
    del response.headers["Content-Type"]  # there is no content to have a type
    return response
