"""``If-Match`` and ``If-None-Match`` read as RFC 9110 writes them.

A member of either list is ``"opaque"`` or ``W/"opaque"`` (section 8.8.3),
or the whole value is ``*``. werkzeug's reader also takes an unquoted value
or a lowercase ``w/`` as a tag; a client that sends one of those has sent
no tag this server gave, and it matches nothing here. A value that is not
such a list as a whole (``*`` among tags, text between tags) names no tag
either: an ``If-Match`` of it fails (412), an ``If-None-Match`` of it never
holds the current tag.
"""

import re
from typing import NamedTuple

# One member and the comma after it, or the end. Lists may hold empty
# members (section 5.6.1); an opaque tag is any visible character but the
# double quote, obs-text (bytes from 0x80, as WSGI's latin-1 str) included.
_MEMBER = re.compile(r'[ \t]*(?:(W/)?"([\x21\x23-\x7e\x80-\xff]*)")?[ \t]*(?:,|\Z)')


class Tags(NamedTuple):
    """A header's tags, unquoted: ``strong`` and ``weak`` (sent with ``W/``);
    ``any`` for ``*``."""

    any: bool = False
    strong: frozenset = frozenset()
    weak: frozenset = frozenset()

    def strongly_match(self, tag):
        """Whether ``tag`` (unquoted, strong) is named: ``If-Match``."""
        return self.any or tag in self.strong

    def weakly_match(self, tag):
        """Whether ``tag`` is named, ``W/`` or not: ``If-None-Match``."""
        return self.any or tag in self.strong or tag in self.weak


NONE = Tags()
ANY = Tags(any=True)


def parse(value):
    """The ``Tags`` of a header's value (``NONE`` when it is malformed)."""
    if value.strip(" \t") == "*":
        return ANY
    strong, weak = set(), set()
    position, end = 0, len(value)
    while position < end:
        member = _MEMBER.match(value, position)
        if member is None or member.end() == position:
            return NONE
        weak_mark, opaque = member.groups()
        if opaque is not None:
            (weak if weak_mark else strong).add(opaque)
        position = member.end()
    return Tags(False, frozenset(strong), frozenset(weak))


def if_match(environ):
    """The request's ``If-Match``, or None when it has none."""
    value = environ.get("HTTP_IF_MATCH")
    return None if value is None else parse(value)


def if_none_match(environ):
    """The request's ``If-None-Match``, or None when it has none."""
    value = environ.get("HTTP_IF_NONE_MATCH")
    return None if value is None else parse(value)
