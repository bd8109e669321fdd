"""This process's copies of cached listings, so a read need not move them.

A listing served from Redis crosses the network and the interpreter on
every read: for a large account that is most of the read's cost. So each
instance keeps the bytes it last served of each listing, with their tag's
link (``posts.tags``), and the token check of a read runs
``scripts.READ_WITH_COPY`` instead of its ``MGET``: still one round trip,
which reads the listing's tag and, of its bytes, only what the copy lacks
(``posts.cache.lookup``):

- the tag cached under the current generation has the copy's link: the
  copy *is* the listing (a link stands for the ids and versions of every
  post, hence for the bytes), and no bytes are read;
- its tail (``posts.scripts``) shows posts appended after the copy's last
  one: the bytes from there on are read, and the copy extended with them;
- anything else (an edit, a delete, a copy too far behind): the listing is
  read whole, as without a copy.

A copy is served only under a tag read from the current generation, in
the same round trip as the token's verdict, so it is never staler than the
cache it stands in for, and never used while Redis is not (the database
answers then). Copies take at most ``POSTS_LOCAL_COPY_BYTES`` of the
process's memory, the least recently used going first; ``0`` keeps none.
Listings under ``SMALLEST`` bytes are not copied.
"""

import threading
from collections import OrderedDict
from typing import NamedTuple

from flask import current_app

EXTENSION = "postservice.listing_copies"
# Smaller listings are not copied: reading a few kilobytes along with the
# token's verdict costs less than the script that reads beside a copy.
SMALLEST = 64 * 1024


class Copy(NamedTuple):
    link: str
    body: bytes


class Copies:
    """Listings' bytes by user id, least recently used first, within ``limit`` bytes."""

    def __init__(self, limit):
        self.limit = limit
        self._copies = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, user_id):
        with self._lock:
            copy = self._copies.get(user_id)
            if copy is not None:
                self._copies.move_to_end(user_id)
            return copy

    def put(self, user_id, link, body):
        """Keep ``body`` as the user's listing of tag ``link``, unless it
        alone is over the limit."""
        with self._lock:
            self._drop(user_id)
            if len(body) > self.limit:
                return
            self._copies[user_id] = Copy(link, body)
            self._bytes += len(body)
            while self._bytes > self.limit:
                self._drop(next(iter(self._copies)))

    def drop(self, user_id):
        with self._lock:
            self._drop(user_id)

    def _drop(self, user_id):
        old = self._copies.pop(user_id, None)
        if old is not None:
            self._bytes -= len(old.body)

    @property
    def size(self):
        """The bytes held, and how many copies hold them."""
        with self._lock:
            return self._bytes, len(self._copies)


def init_app(app):
    app.extensions[EXTENSION] = Copies(app.config["POSTS_LOCAL_COPY_BYTES"])


def held(user_id):
    """This process's copy of the user's listing (a ``Copy``), or None."""
    copies = current_app.extensions[EXTENSION]
    return copies.get(user_id) if copies.limit else None


def keep(user_id, held, link, body):
    """After a read answered ``body`` of tag ``link``; ``held`` is the copy
    it found (or None)."""
    copies = current_app.extensions[EXTENSION]
    if not copies.limit:
        return
    if len(body) < SMALLEST:
        if held is not None:
            copies.drop(user_id)  # the listing shrank: read it with the verdict
    elif held is None or held.link != link:
        copies.put(user_id, link, body)
