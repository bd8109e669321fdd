"""The private library internals the service relies on, checked loudly.

Each is used because the library offers no public way (see the README,
"Upgrading"), and its package is pinned to a minor range in setup.cfg. A
release that changes one of them fails here, not silently in production.
"""

import inspect
import logging
import math
import re
from pathlib import Path

import pymysql
import waitress
from flask_jwt_extended import JWTManager, view_decorators
from waitress import parser
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import BaseWSGIServer
from waitress.task import Task, ThreadedTaskDispatcher, WSGITask
from zxcvbn import matching, scoring

import config
from postservice.auth import memo
from postservice.ops import logs


def test_the_token_decode_that_is_remembered_keeps_its_signature():
    # memo.MemoizingJWTManager overrides this method.
    parameters = list(inspect.signature(JWTManager._decode_jwt_from_config).parameters)
    assert parameters == ["self", "encoded_token", "csrf_value", "allow_expired"]
    assert (
        memo.MemoizingJWTManager._decode_jwt_from_config
        is not JWTManager._decode_jwt_from_config
    )


def test_the_token_header_is_still_read_where_it_is_remembered(make_app):
    # auth.memo replaces this module-level name; the request path must
    # still look it up there, with the token as its only argument.
    source = inspect.getsource(view_decorators._decode_jwt_from_request)
    assert "jwt_header = get_unverified_jwt_headers(encoded_token)" in source
    make_app()
    assert view_decorators.get_unverified_jwt_headers is memo.remembered_header


def test_pymysql_connections_keep_their_socket_where_the_pool_polls_it():
    # db_pool polls ``connection._sock`` on checkout, and reads a missing one
    # as a closed connection.
    source = inspect.getsource(pymysql.connections.Connection)
    assert "self._sock = sock" in source
    assert "self._sock = None" in source


def test_smorest_still_registers_its_handlers_where_api_turns_them_off():
    # api.Api overrides both so errors keep their one shape.
    import flask_smorest

    for name in ("_register_error_handlers", "_register_pagination_header"):
        method = getattr(flask_smorest.Api, name)
        assert list(inspect.signature(method).parameters) == ["self"], name
    # Called by name while the Api sets itself up, so overriding them works.
    assert "self._register_error_handlers()" in inspect.getsource(flask_smorest.Api)
    assert "self._register_pagination_header()" in inspect.getsource(
        flask_smorest.spec.APISpecMixin
    )


def test_waitress_still_reports_queued_requests_through_its_queue_logger():
    # serve.QueueLog filters waitress's public "waitress.queue" logger to
    # count every queued request and let one line per interval through.
    # It counts without a lock of its own: the call must stay under the
    # dispatcher's lock, with the depth as its one argument.
    assert ThreadedTaskDispatcher.queue_logger is logging.getLogger("waitress.queue")
    source = inspect.getsource(ThreadedTaskDispatcher.add_task)
    locked = source.index("with self.lock:")
    call = source.index("self.queue_logger.warning(")
    assert locked < call
    assert '"Task queue depth is %d", queue_size - idle_threads' in source


def test_waitress_channels_still_keep_what_close_stalled_reads():
    # serve.channel.close_stalled closes a connection that moved no bytes
    # for the channel timeout, from waitress's ``last_activity`` (on
    # time.time(), set when bytes are read or sent and when an answer
    # ends), ``requests``, ``total_outbufs_len`` and ``outbuf_lock``;
    # ``handle_close`` frees the output buffers and wakes a worker waiting
    # to write, which then stops. GracefulServer replaces the listener's
    # ``maintenance``, which waitress calls from ``readable``.
    read = inspect.getsource(HTTPChannel.handle_read)
    assert "self.last_activity = time.time()" in read
    flush = inspect.getsource(HTTPChannel._flush_some)
    assert "self.last_activity = time.time()" in flush
    assert "self.last_activity = time.time()" in inspect.getsource(HTTPChannel.service)
    close = inspect.getsource(HTTPChannel.handle_close)
    assert "with self.outbuf_lock:" in close
    assert "outbuf.close()" in close
    assert "self.connected = False" in close
    assert "self.outbuf_lock.notify()" in close
    waiting = inspect.getsource(HTTPChannel._flush_outbufs_below_high_watermark)
    assert "self.connected" in waiting
    assert "self.outbuf_lock.wait()" in waiting
    write = inspect.getsource(HTTPChannel.write_soon)
    assert "raise ClientDisconnected" in write
    assert "self.maintenance(now)" in inspect.getsource(BaseWSGIServer.readable)
    assert list(inspect.signature(BaseWSGIServer.maintenance).parameters) == [
        "self",
        "now",
    ]


def test_waitress_logs_through_its_two_loggers_only():
    # ops.logs escapes the lines of these two loggers (a filter on a logger
    # does not see its children's lines): a third would go unescaped.
    package = Path(waitress.__file__).parent
    names = set()
    for source in package.glob("*.py"):
        names.update(re.findall(r"getLogger\(([^)]*)\)", source.read_text()))
    assert names == {'"waitress"', '"waitress.queue"'}
    assert logs.WAITRESS_LOGGERS == ("waitress", "waitress.queue")


def test_waitress_requests_keep_what_its_own_answers_are_logged_with():
    # serve.JsonErrorTask logs a refused request's ``command`` and ``path``
    # (the path as a WSGI string), reads its ``headers`` by waitress's keys,
    # and says "-" for a 431's, which waitress parses from a stand-in line.
    source = inspect.getsource(HTTPRequestParser)
    assert "self.command = command" in source
    assert "self.path," in source
    assert 'key.upper().replace(b"-", b"_").decode("latin-1")' in source
    stand_in = source.index('self.parse_header(b"GET / HTTP/1.0\\r\\n")')
    assert stand_in < source.index("RequestHeaderFieldsTooLarge(", stand_in)
    assert "unquote_bytes_to_wsgi(path)" in inspect.getsource(parser.split_uri)


def test_waitress_still_accepts_through_the_listeners_accept_and_readable():
    # serve.AcceptGuard replaces the listener's ``accept`` (returning None
    # when out of descriptors) and ``readable`` (False while paused): the
    # listener must still look both up on itself, and take None as nothing
    # to accept.
    source = inspect.getsource(BaseWSGIServer.handle_accept)
    assert "v = self.accept()" in source
    assert "if v is None:\n                return" in source
    assert "def readable(self)" in inspect.getsource(BaseWSGIServer)
    assert "self.maintenance(now)" in inspect.getsource(BaseWSGIServer.readable)


def test_zxcvbn_still_has_the_matchers_and_the_pricing_the_secret_check_uses():
    # config.secret_guess_bits calls zxcvbn's matchers and its pricing of a
    # match directly (its public zxcvbn() prices random characters at 10
    # each and reads at most 72), and merges its ranked word lists.
    assert set(matching.RANKED_DICTIONARIES) >= {"passwords", "english_wikipedia"}
    assert matching.RANKED_DICTIONARIES["passwords"]["password"] == 2
    walk = matching.spatial_match("qwertyuiop")
    assert any(m["token"] == "qwertyuiop" and m["graph"] == "qwerty" for m in walk)
    [sequence] = matching.sequence_match("abcdefgh")
    assert (sequence["i"], sequence["j"]) == (0, 7)
    [year] = matching.regex_match("x2026x", _regexen={"recent_year": config.YEAR})
    assert year["token"] == "2026"
    assert any(m["token"] == "2026-01-15" for m in matching.date_match("2026-01-15"))
    word = {
        "pattern": "dictionary",
        "i": 0,
        "j": 7,
        "token": "Password",
        "matched_word": "password",
        "rank": 2,
        "reversed": False,
        "l33t": False,
    }
    # Rank 2, times 2 for the capital; the whole key, so no floor.
    assert math.log2(int(scoring.estimate_guesses(word, "Password"))) == 2


def test_waitress_still_closes_the_connection_of_a_request_that_asks_to():
    # serve.drain.ClosingTask marks each request of a draining server as
    # asking to close, before waitress builds the answer's headers: waitress
    # must read the request's header there, add ``Connection: close`` for
    # both HTTP versions, and close the connection once the answer is sent.
    # serve.drain.idle reads the channel's flags of a close to come;
    # more_requests reads the requests received under waitress's lock.
    header = inspect.getsource(Task.build_response_header)
    assert 'connection = self.request.headers.get("CONNECTION", "").lower()' in header
    assert header.count("self.set_close_on_finish()") >= 3
    assert 'self.response_headers.append(("Connection", "close"))' in (
        inspect.getsource(Task.set_close_on_finish)
    )
    service = inspect.getsource(HTTPChannel.service)
    assert "if task.close_on_finish:" in service
    assert "self.close_when_flushed = True" in service
    write = inspect.getsource(HTTPChannel.handle_write)
    assert "self.will_close = True" in write
    assert "self.handle_close()" in write
    assert WSGITask.build_response_header is Task.build_response_header
    received = inspect.getsource(HTTPChannel.received)
    assert "with self.requests_lock:" in received
    assert "self.requests.append(self.request)" in received
