"""Post endpoints: /api/v1/posts/..., all for the caller's own posts."""

from flask import Response, request, stream_with_context, url_for

from postservice.auth.revocation import reads_along
from postservice.auth.tokens import current_user_id
from postservice.http import etags
from postservice.http.api import Blueprint
from postservice.http.errors import PreconditionFailed
from postservice.models import ID_MAX
from postservice.posts import cache, idempotency, service, tags
from postservice.posts.schemas import (
    AddPostSchema,
    EditPostSchema,
    PageQuerySchema,
    PostCreatedSchema,
    PostSchema,
)

bp = Blueprint(
    "posts", __name__, url_prefix="/api/v1/posts", description="The caller's posts"
)

page_query_schema = PageQuerySchema()
DATABASE_DOWN = "The database is unavailable"
POST_ID = f"<id(max={ID_MAX}):post_id>"


# The conditional headers as documented (RFC 9110, section 13.1): on a read
# If-None-Match revalidates (304) and If-Match must hold (412); on a write
# both say when the change may happen (412 and nothing changes otherwise).
def _header(name, description):
    return {
        "in": "header",
        "name": name,
        "schema": {"type": "string"},
        "description": description,
    }


IF_NONE_MATCH = _header(
    "If-None-Match",
    "Tags the client holds (or `*`): 304 with no body when one is current "
    "(weak comparison)",
)
IF_MATCH_READ = _header(
    "If-Match", "Tags (or `*`): 412 unless one is current (strong comparison)"
)
IF_MATCH = _header(
    "If-Match",
    "The post's tag as last read (or `*`): the change happens only if it is "
    "still current (strong comparison), else 412 and nothing changes",
)
IF_NONE_MATCH_WRITE = _header(
    "If-None-Match",
    "Tags (or `*`, any post): the change happens only if none is current "
    "(weak comparison), else 412 and nothing changes",
)
PRECONDITION_FAILED = "A condition of If-Match or If-None-Match is false"
ETAG = {"ETag": {"description": "The tag of this answer", "schema": {"type": "string"}}}
LINK = {
    "Link": {
        "description": 'A page\'s next page, `<url>; rel="next"`, when more '
        "posts may follow",
        "schema": {"type": "string"},
    }
}
NOT_MODIFIED = "Not Modified: the tag in If-None-Match is current; no body"


@bp.post("/add-post")
@bp.protected
@reads_along(cache.ADD_ALONG)  # whether the post goes into a cached listing
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
@bp.doc(
    parameters=[
        {"in": "query", "schema": PageQuerySchema},
        IF_NONE_MATCH,
        IF_MATCH_READ,
    ]
)
@bp.alt_response(
    200,
    schema=PostSchema(many=True),
    description="The posts",
    headers={**ETAG, **LINK},
    success=True,
)
@bp.alt_response(304, description=NOT_MODIFIED, headers=ETAG)
@bp.alt_response(412, description=PRECONDITION_FAILED)
@bp.alt_response(
    422,
    description="`limit` or `after_id` is not a whole number in range, in ASCII digits",
)
@bp.alt_response(
    503,
    description=DATABASE_DOWN + ", or too many requests rebuild this listing "
    "at once: retry",
)
def get_posts():
    """List the caller's posts, oldest first

    Without parameters, every post. With `limit` (1 to 1000, default 100)
    and/or `after_id` (default 0), one page of posts with ids above
    `after_id`, and a `Link: <url>; rel="next"` header when more may follow.
    Every answer has an `ETag`, each page its own: send it back in
    `If-None-Match` to be answered 304, with no body, while nothing changed.
    """
    user_id = current_user_id()
    # Most requests have no query string: skip the schema for them.
    page = (
        bp.ARGUMENTS_PARSER.parse(page_query_schema, location="query")
        if request.args
        else None
    )
    environ = request.environ  # read once: each request.* is a proxy lookup
    known = _known(environ)
    if not page:
        answer = service.listing_body(user_id=user_id, known=known)
        return _listing_response(_matched(answer, environ))
    answer = service.page_body(user_id=user_id, known=known, **page)
    answer = _matched(answer, environ)
    response = _listing_response(answer)
    if answer.next_after_id is not None and answer.body is not None:
        # A relative reference (RFC 8288 allows it): no trust in the Host header.
        url = url_for(".get_posts", limit=page["limit"], after_id=answer.next_after_id)
        response.headers["Link"] = f'<{url}>; rel="next"'
    return response


def _known(environ):
    """``If-None-Match`` as a test of a tag (weak comparison), or None."""
    # The environ itself: most requests have no such header, and a lookup
    # in werkzeug's Headers compares every header's name to find that out.
    held = etags.if_none_match(environ)
    return None if held is None else held.weakly_match


def _matched(answer, environ):
    """``answer``, unless an ``If-Match`` names none of its tag (412).

    A read changes nothing, so the condition is tested once the tag is
    known; a body already streaming is closed, which ends its query.
    """
    if _if_match_holds(answer.tag, environ):
        return answer
    close = getattr(answer.body, "close", None)
    if close is not None:
        close()
    raise PreconditionFailed()


def _if_match_holds(tag, environ):
    if_match = etags.if_match(environ)
    return if_match is None or if_match.strongly_match(tag)


def _listing_response(answer):
    if answer.body is None:
        response = Response(status=304)
        del response.headers["Content-Type"]
    else:
        response = _json_response(answer.body)
    # Tags are hex digits and dots (posts.tags): quoted as they are, without
    # werkzeug's check of what a tag may hold, and added, not set: no other
    # ETag is there to replace.
    response.headers.add("ETag", f'"{answer.tag}"')
    return response


def _json_response(body):
    """Bytes as they are; a stream of chunks keeps the request context to its end."""
    if not isinstance(body, bytes):
        body = stream_with_context(body)
    return Response(body, mimetype="application/json")


@bp.get(f"/get-post/{POST_ID}")
@bp.protected
@bp.doc(parameters=[IF_NONE_MATCH, IF_MATCH_READ])
@bp.response(200, PostSchema, description="The post", headers=ETAG)
@bp.alt_response(304, description=NOT_MODIFIED, headers=ETAG)
@bp.alt_response(404, description="No such post, or it is someone else's")
@bp.alt_response(412, description=PRECONDITION_FAILED)
@bp.alt_response(503, description=DATABASE_DOWN)
def get_post(post_id):
    """One of the caller's posts, with its `ETag`"""
    post, tag = service.get_post(user_id=current_user_id(), post_id=post_id)
    environ = request.environ
    if not _if_match_holds(tag, environ):
        raise PreconditionFailed()
    known = _known(environ)
    if known is not None and known(tag):
        return _listing_response(service.Listing(tag, None))
    return _post_response(post, tag)


@bp.patch(f"/edit-post/{POST_ID}")
@bp.protected
@bp.arguments(EditPostSchema)
@bp.doc(parameters=[IF_MATCH, IF_NONE_MATCH_WRITE])
@bp.response(200, PostSchema, description="The post as edited", headers=ETAG)
@bp.alt_response(404, description="No such post, or it is someone else's")
@bp.alt_response(412, description=PRECONDITION_FAILED + "; nothing changed")
@bp.alt_response(
    413, description="The text is over 1 MiB of UTF-8, or the body over 8 MiB"
)
@bp.alt_response(422, description="Invalid input: `errors` names each field")
@bp.alt_response(
    503, description=DATABASE_DOWN + ", or kept rolling the write back; retry"
)
def edit_post(body, post_id):
    """Replace the text of one of the caller's posts

    `created_at` stays, `updated_at` moves. Send the post's `ETag` in
    `If-Match` so that an edit made meanwhile (on any device) is not
    overwritten: a stale tag is answered 412.
    """
    post, tag = service.edit_post(
        user_id=current_user_id(),
        post_id=post_id,
        condition=_condition(post_id),
        **body,
    )
    return _post_response(post, tag)


def _condition(post_id):
    """What the request's conditional headers require of the post's version."""
    environ = request.environ
    return tags.condition(
        post_id, etags.if_match(environ), etags.if_none_match(environ)
    )


def _post_response(post, tag):
    response = Response(post, mimetype="application/json")
    response.headers.add("ETag", f'"{tag}"')
    return response


# Larger ids cannot exist and would overflow SQLite's integer binding: 404.
@bp.delete(f"/delete-post/{POST_ID}")
@bp.protected
@bp.doc(parameters=[IF_MATCH, IF_NONE_MATCH_WRITE])
@bp.response(204, description="Deleted")
@bp.alt_response(404, description="No such post, or it is someone else's")
@bp.alt_response(412, description=PRECONDITION_FAILED + "; the post stays")
@bp.alt_response(503, description=DATABASE_DOWN)
def delete_post(post_id):
    """Delete one of the caller's posts

    Send the post's `ETag` in `If-Match` so that a post edited meanwhile (on
    any device) is not deleted unseen: a stale tag is answered 412.
    """
    service.delete_post(
        user_id=current_user_id(), post_id=post_id, condition=_condition(post_id)
    )
    response = Response(status=204)
    del response.headers["Content-Type"]  # there is no content to have a type
    return response
