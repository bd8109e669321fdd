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
from typing import NamedTuple

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
    # Versions are INTEGER columns: a longer number names none of them. A
    # leading zero is a tag never given ("x.03" is not "x.3": strong
    # comparison is character by character).
    if not (version.isascii() and version.isdigit() and len(version) <= 9):
        return None
    if version.startswith("0"):
        return None
    return int(version)


class Condition(NamedTuple):
    """What ``If-Match`` and ``If-None-Match`` require of one post's version
    for a write of it to go ahead (RFC 9110, section 13.2.2).

    ``versions``: one of them (None: any); ``not_versions``: none of them;
    ``never``: not at all (``If-None-Match: *``, "only if there is no such
    post", which a write of an existing post never is).
    """

    versions: frozenset | None = None
    not_versions: frozenset = frozenset()
    never: bool = False

    @property
    def shape(self):
        """``(in_versions, not_in_versions)``: the clauses a statement needs."""
        return self.versions is not None, bool(self.not_versions)

    @property
    def checks_version(self):
        return any(self.shape)


UNCONDITIONAL = Condition()


def condition(post_id, if_match, if_none_match):
    """The ``Condition`` of a write of the post from the request's
    ``etags.Tags`` (None where a header is absent)."""
    versions = None
    if if_match is not None and not if_match.any:
        versions = _versions(if_match.strong, post_id)  # compared strongly
    if if_none_match is None:
        return Condition(versions)
    if if_none_match.any:
        return Condition(versions, never=True)
    held = _versions(if_none_match.strong | if_none_match.weak, post_id)
    return Condition(versions, held)


def _versions(tags, post_id):
    return frozenset(
        version for tag in tags if (version := version_in(tag, post_id)) is not None
    )
