"""What the logging tests send and look for: secrets, and the fields of a
request line in the json format."""

import json

SECRET_PASSWORD = "Zebra-Quartz-8812"
SECRET_TEXT = "my very private diary entry"
REQUEST_FIELDS = {
    "time",
    "level",
    "logger",
    "message",
    "request_id",
    "method",
    "path",
    "endpoint",
    "status",
    "duration_ms",
}


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]
