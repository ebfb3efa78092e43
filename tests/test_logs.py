from __future__ import annotations

import json
import logging

from imcore.logs import JsonFormatter, KeyValueFormatter


def record(**fields: object) -> logging.LogRecord:
    rec = logging.LogRecord("imcore.conn", logging.INFO, __file__, 1, "close", None, None)
    rec.fields = fields
    return rec


def test_key_value_lines_quote_what_needs_it() -> None:
    line = KeyValueFormatter().format(record(user="alice", code="4008", reason="slow consumer"))
    assert 'msg=close user=alice code=4008 reason="slow consumer"' in line
    assert line.startswith("ts=")


def test_json_lines_are_one_object_each() -> None:
    line = JsonFormatter().format(record(user="alice", duration_ms=12))
    data = json.loads(line)
    assert (data["msg"], data["user"], data["duration_ms"], data["level"]) == (
        "close",
        "alice",
        12,
        "info",
    )
