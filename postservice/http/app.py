"""The Flask class of the app: Flask with our request and JSON classes, and
sync checks done once per function instead of once per call."""

from flask import Flask

from postservice.http.parsing import JSONProvider, JSONRequest

# Functions whose check is remembered; beyond this many, checks are not
# stored (a bound, should anything pass ever-new functions).
SYNC_MEMO_SIZE = 1000


class App(Flask):
    request_class = JSONRequest
    json_provider_class = JSONProvider

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sync_memo = {}

    def ensure_sync(self, func):
        # Flask asks inspect whether every hook and view is a coroutine
        # function, on every request: ten checks a request here. A
        # function's kind never changes, so the answer is kept.
        synced = self._sync_memo.get(func)
        if synced is None:
            synced = super().ensure_sync(func)
            if len(self._sync_memo) < SYNC_MEMO_SIZE:
                self._sync_memo[func] = synced
        return synced
