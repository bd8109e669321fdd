"""What waitress logs is escaped as the request log is: one request, one line.

waitress logs ``Client disconnected while serving <path>`` with the path
decoded: a ``%0A`` in it put whatever followed, a forged request line say,
alone on a line of its own.
"""

import logging
import socket
import struct
import threading
import time

from waitress import utilities

from postservice.ops import logs
from postservice.serve import GracefulServer

from ..support.servers import serving

FORGED = "INFO:postservice.request:POST /api/v1/users/login 200 1.0ms request_id=FORGED"
CRAFTED_PATH = "/a%0A" + FORGED.replace(" ", "%20")
DECODED_PATH = "/a\n" + FORGED
TEXT = logging.Formatter("%(levelname)s:%(name)s:%(message)s")


def disconnected_lines(caplog):
    return [
        record
        for record in caplog.records
        if record.name == "waitress"
        and record.getMessage().startswith("Client disconnected while serving")
    ]


def test_a_path_with_a_newline_stays_on_its_line_when_the_client_disconnects(caplog):
    """The disconnect made deterministic: the client resets the connection
    after the first bytes of the answer, and the app goes on writing until
    the server has seen it go."""
    caplog.set_level(logging.INFO)
    client_gone = threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first"
        client_gone.wait(10)
        deadline = time.monotonic() + 10
        # A write to the reset socket fails, the server closes it, and the
        # next write raises ClientDisconnected, which waitress logs.
        while time.monotonic() < deadline:
            yield b" "
            time.sleep(0.01)

    server = GracefulServer(app, {"host": "127.0.0.1", "port": 0, "threads": 1})
    with serving(server):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as c:
            c.sendall(f"GET {CRAFTED_PATH} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            received = b""
            while b"first" not in received:
                chunk = c.recv(4096)
                assert chunk, f"closed before the first bytes: {received!r}"
                received += chunk
            # Closed with a reset, as a client that gives up does.
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client_gone.set()
        deadline = time.monotonic() + 15
        while not disconnected_lines(caplog):
            assert time.monotonic() < deadline, "waitress logged no disconnect"
            time.sleep(0.05)
    [record] = disconnected_lines(caplog)
    line = TEXT.format(record)
    assert line == (
        "INFO:waitress:Client disconnected while serving "
        + DECODED_PATH.replace("\n", "\\n")
    )
    assert "\n" not in line


def test_every_line_of_waitress_is_escaped_under_any_server(make_app, caplog):
    # waitress-serve --call postservice:create_app has no GracefulServer:
    # the app sets the escaping up.
    make_app()
    caplog.set_level(logging.INFO)
    utilities.logger.warning("Exception while serving %s", DECODED_PATH)
    utilities.logger.warning("caf\u00e9\r\n%s\x1b[2J", "x")
    first, second = (TEXT.format(record) for record in caplog.records[-2:])
    assert first == "WARNING:waitress:Exception while serving /a\\n" + FORGED
    assert second == "WARNING:waitress:caf\\xe9\\r\\nx\\x1b[2J"


def test_each_logger_of_waitress_escapes(make_app):
    # Its loggers' names (test_pins.py checks there are no others). A
    # logger's filters apply only to its own lines, not to its children's.
    make_app()
    for logger in (utilities.logger, utilities.queue_logger):
        assert any(isinstance(f, logs.PrintableLines) for f in logger.filters), (
            logger.name
        )
