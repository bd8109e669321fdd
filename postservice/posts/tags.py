"""Entity tags of posts and listings (RFC 9110, section 8.8.3).

A post's content follows from its id and its version (``Post.version``:
one more with every edit), and a listing's from the ids and versions of
the posts it holds, in order. So every tag is derived from those pairs and
from the wire format's digest, never from when or where it was computed:
the same listing has the same tag on every instance, whether its bytes
came from the cache or from the database, and while Redis is down the tag
read from the database is still the right one.

A listing's tag is a chain of SHA-1 digests over its pairs
(``chain(...)``), so the tag of a listing with one post appended follows
from the old tag and the new pair alone: the cache appends an added post
to a cached listing, in a Redis script, without reading the listing
(``posts.cache``). SHA-1 is what Redis scripts can compute; the tags only
need to tell listings of one account apart, which it does.
"""

import hashlib

from postservice.posts.schemas import listing_format


def _sha1(text):
    return hashlib.sha1(text.encode("ascii"), usedforsecurity=False).hexdigest()


def seed(kind):
    """The chain's start for a whole listing (``"all"``) or one page."""
    return _sha1(f"{kind}:{listing_format()}")


def chain(link, post_id, version):
    """The next link: ``link`` followed by the post ``post_id`` at ``version``.

    The Lua scripts of ``posts.scripts`` compute the same value (``linked``).
    """
    return _sha1(f"{link}:{post_id}.{version}")


def page_seed(limit, next_after_id):
    """A page's bytes and its ``Link`` header follow from its posts and these."""
    return seed(f"page:{limit}:{next_after_id}")


def post_tag(post_id, version):
    """One post's tag, unquoted: the wire format, the post, its version.

    Tags are strong (``ETag: "..."``): equal tags stand for equal bytes.
    """
    return f"{listing_format()}.{post_id}.{version}"


def version_in(tag, post_id):
    """The version a tag of the post ``post_id`` names, or None when it is
    not one (another post's, another wire format's, or made up)."""
    if not tag:  # werkzeug's reading of a malformed list can hold None
        return None
    head, _, version = tag.rpartition(".")
    if head != f"{listing_format()}.{post_id}":
        return None
    # Versions are INTEGER columns: a longer number names none of them.
    if not (version.isascii() and version.isdigit() and len(version) <= 9):
        return None
    return int(version)
