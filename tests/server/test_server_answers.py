"""Answers given before the app's hooks run are counted and logged like the app's.

waitress answers a request it cannot read (400), one whose headers (431)
or body (413) are over its limits and one with a transfer coding it does
not know (501) itself; the proxy handling answers a malformed header of the
trusted proxy (400) before Flask's hooks. Each is counted in the request
metrics under the endpoint ``none`` and written as one request line, with
its request id echoed in ``X-Request-ID``, as every answer of the app is.
"""

import re
import socket

import pytest
import requests
from waitress.adjustments import Adjustments

from config import SERVER_BODY_LIMIT

from ..support.logs import REQUEST_FIELDS, json_lines
from ..support.metrics import parse, requests_total
from ..support.processes import free_port
from ..support.servers import AppInstance

# A path template's argument, "{post_id}".
ARGUMENT = re.compile(r"\{\w+\}")


def refusals(method, path):
    """A request to ``method path`` for each answer waitress gives itself.

    The headers reach waitress's limit with the last byte sent: nothing is
    left unread, which would make its close a reset that can overtake the
    answer.
    """
    line = f"{method} {path} HTTP/1.1\r\nHost: x\r\n".encode()
    return {
        400: line + b"Content-Length: ten\r\n\r\n",
        431: (line + b"X-Big: ").ljust(Adjustments.max_request_header_size, b"a"),
        413: line + b"Content-Length: %d\r\n\r\n" % (SERVER_BODY_LIMIT + 1),
        501: line + b"Transfer-Encoding: gzip\r\n\r\n",
    }


# (name, request, status, method and path in the log, method in the metrics)
# A request waitress could not read as far as its request line has neither:
# its line says "-" and its metrics "other".
REFUSED = [
    (
        "bare LF",
        b"GET /bare HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n",
        400,
        ("-", "-"),
        "other",
    ),
    (
        "bad length",
        refusals("GET", "/length")[400],
        400,
        ("GET", "/length"),
        "GET",
    ),
    ("no request line", b"NOT A REQUEST LINE\r\n\r\n", 400, ("-", "-"), "other"),
    (
        "headers",
        refusals("GET", "/headers")[431],
        431,
        ("-", "-"),
        "other",
    ),
    (
        "body",
        b"POST /body HTTP/1.1\r\nHost: x\r\nX-Request-ID: chosen-by-client.1\r\n"
        b"Content-Length: %d\r\n\r\n" % (SERVER_BODY_LIMIT + 1),
        413,
        ("POST", "/body"),
        "POST",
    ),
    (
        "coding",
        b"POST /a%0Ab%C3%A9 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        501,
        ("POST", "/a\\nb\\xe9"),
        "POST",
    ),
    (
        "proxy header",
        b"GET /api/v1/posts/get-posts HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b'X-Forwarded-For: "203.0.113.7\r\n\r\n',
        400,
        ("GET", "/api/v1/posts/get-posts"),
        "GET",
    ),
]


@pytest.fixture
def served(tmp_path, database_url, redis_url):
    """The production server behind a trusted proxy (this host), with its
    metrics listener; ``start`` takes the log format."""
    started = []

    def start(log_format):
        instance = AppInstance(
            tmp_path,
            database_url,
            redis_url,
            threads=4,
            METRICS_PORT=str(free_port()),
            TRUSTED_PROXY="127.0.0.1",
            LOG_FORMAT=log_format,
        )
        instance.metrics = f"http://127.0.0.1:{instance.env['METRICS_PORT']}"
        started.append(instance)
        instance.start()
        return instance

    yield start
    for instance in started:
        instance.stop()


def exchange(port, request):
    """The status and headers (names in lower case) of the answer to
    ``request``, sent as bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
        client.sendall(request)
        data = b""
        try:
            while chunk := client.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass  # closed with part of the request unread
    head = data.partition(b"\r\n\r\n")[0].decode("latin-1")
    assert head, f"no answer to {request[:60]!r}"
    status, *lines = head.split("\r\n")
    headers = {
        name.lower(): value for name, value in (line.split(": ", 1) for line in lines)
    }
    return int(status.split()[1]), headers


def test_answers_before_the_app_are_counted_and_logged(served):
    instance = served("json")
    answered = {}
    for name, request, status, _, _ in REFUSED:
        got, headers = exchange(instance.port, request)
        assert got == status, name
        assert headers["content-type"] == "application/json", name
        answered[name] = headers.get("x-request-id")

    seen = parse(requests.get(instance.metrics + "/metrics", timeout=5).text)
    expected = {}
    for _, _, status, _, method in REFUSED:
        expected[(method, status)] = expected.get((method, status), 0) + 1
    counted = {key: requests_total(seen, "none", *key) for key in expected}
    assert counted == expected
    # Their durations, in the histogram of the endpoint "none".
    durations = sum(
        value
        for (name, labels), value in seen.items()
        if name == "postservice_http_request_duration_seconds_count"
        and ("endpoint", "none") in labels
    )
    assert durations == len(REFUSED)

    assert instance.terminate() == 0
    lines = [  # but the start's own check
        line
        for line in json_lines(instance.log.read_text())
        if line["logger"] == "postservice.request" and line["path"] != "/healthz"
    ]
    assert len(lines) == len(REFUSED), [line["message"] for line in lines]
    assert answered["body"] == "chosen-by-client.1"
    by_id = {line["request_id"]: line for line in lines}
    assert len(by_id) == len(lines) == len(REFUSED)
    for name, _, status, (method, path), _ in REFUSED:
        rid = answered[name]
        assert rid in by_id, f"{name}: no request line with id {rid}"
        line = by_id[rid]
        assert set(line) >= REQUEST_FIELDS, name
        got = (line["method"], line["path"], line["endpoint"], line["status"])
        assert got == (method, path, "none", status), name
        assert line["duration_ms"] >= 0
        assert line["message"] == (
            f"{method} {path} {status} {line['duration_ms']:.1f}ms request_id={rid}"
        )


def test_every_operation_documents_what_the_server_answers_itself(served):
    instance = served("text")
    base = f"http://127.0.0.1:{instance.port}"
    document = requests.get(base + "/api/v1/openapi.json", timeout=10).json()
    operations = [
        (method.upper(), template, operation)
        for template, item in document["paths"].items()
        for method, operation in item.items()
        if method != "parameters"
    ]
    assert operations
    for method, template, operation in operations:
        for status, request in refusals(method, ARGUMENT.sub("1", template)).items():
            got, headers = exchange(instance.port, request)
            assert got == status, (method, template)
            assert headers["content-type"] == "application/json"
            documented = operation["responses"].get(str(status))
            assert documented, f"{method} {template}: {status}"
            schema = documented["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}


def test_each_is_one_text_line(served):
    instance = served("text")
    ids = []
    for name, request, _, _, _ in REFUSED:
        if name in ("no request line", "coding", "proxy header"):
            ids.append(exchange(instance.port, request)[1].get("x-request-id"))
    assert instance.terminate() == 0
    lines = [
        line
        for line in instance.log.read_text().splitlines()
        if line.startswith("INFO:postservice.request:")
        and not line.startswith("INFO:postservice.request:GET /healthz 200 ")
    ]
    assert len(lines) == 3
    starts = ["- - 400 ", "POST /a\\nb\\xe9 501 ", "GET /api/v1/posts/get-posts 400 "]
    for line, start, rid in zip(lines, starts, ids, strict=True):
        assert line.startswith("INFO:postservice.request:" + start), line
        assert line.endswith(f"ms request_id={rid}"), line
