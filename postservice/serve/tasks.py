"""waitress's task for the app's answers, keeping connections open where
waitress would close them."""

from waitress.task import WSGITask


class KeepAliveTask(WSGITask):
    """waitress's task, keeping the connection open after a 204 or a 304.

    waitress keeps an HTTP/1.1 connection open only after an answer whose
    length it sends, and it sends no length where there is no body: so it
    closed the connection after every 204 (a deleted post) and every 304
    (a listing that did not change), and the client paid a new connection
    for its next request. Such an answer ends with its headers (RFC 9112,
    6.3), so the connection goes on, unless the client or the server asked
    to close it.
    """

    _bodiless = False

    def build_response_header(self):
        connection = self.request.headers.get("CONNECTION", "").lower()
        self._bodiless = (
            not self.has_body
            and self.version == "1.1"
            and connection != "close"
            and not self.close_on_finish
        )
        try:
            return super().build_response_header()
        finally:
            self._bodiless = False

    def set_close_on_finish(self):
        if self._bodiless:
            return  # waitress's "no length, so close": nothing to delimit
        super().set_close_on_finish()
