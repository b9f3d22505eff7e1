"""kvstore.logsetup: the JSON formatter's fields, the event-field table and flags."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from kvstore import logsetup

SOURCES = Path(logsetup.__file__).parent


def _format(msg: str, *args, exc: BaseException | None = None, **extra) -> dict:
    record = logging.LogRecord("kvstore.x", logging.WARNING, __file__, 7, msg, args, None)
    if exc is not None:
        try:
            raise exc
        except type(exc):
            import sys

            record.exc_info = sys.exc_info()
    for k, v in extra.items():
        setattr(record, k, v)
    return json.loads(logsetup.JsonFormatter().format(record))


def test_every_event_template_is_a_message_the_code_logs():
    """EVENT_FIELDS is keyed by message text: a changed message must fail here."""
    source = "\n".join(p.read_text() for p in SOURCES.rglob("*.py") if "pb" not in p.parts)
    flat = re.sub(r'"\s+"', "", source)  # implicit concatenation of string literals
    missing = [t for t in logsetup.EVENT_FIELDS if f'"{t}"' not in flat]
    assert missing == []
    for template, fields in logsetup.EVENT_FIELDS.items():
        assert len(fields) == len(re.findall(r"%[-.0-9]*[sdxrf]", template)), template


def test_fields_from_the_table_the_context_and_extra():
    logsetup.set_member(0x8E9E05C52164694D, 0xCDF818194E3A8C32)
    try:
        doc = _format("member %x: leader is now %x (term %d, role %s)", 1, 0xAB, 3, "LEADER")
        extra = _format("took %s", "x", took_s=0.25, remote_peer="p")
    finally:
        logsetup.clear_member()
    assert list(doc)[:6] == ["level", "ts", "caller", "msg", "member-id", "cluster-id"]
    assert doc["level"] == "warn"
    assert doc["msg"] == "member 1: leader is now ab (term 3, role LEADER)"
    assert doc["member-id"] == "8e9e05c52164694d" and doc["cluster-id"] == "cdf818194e3a8c32"
    assert doc["leader-id"] == "00000000000000ab" and doc["term"] == 3 and doc["role"] == "LEADER"
    assert doc["caller"].endswith("test_logsetup.py:7")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["ts"])
    assert extra["took-s"] == 0.25 and extra["remote-peer"] == "p"
    assert "member-id" not in _format("after clear")


def test_exceptions_become_error_and_stacktrace_fields():
    doc = _format("failed", exc=ValueError("boom"))
    assert doc["error"] == "ValueError: boom" and "Traceback" in doc["stacktrace"]


def test_a_broken_record_still_prints_one_json_line():
    doc = _format("%d apples", "not-a-number")
    assert doc["msg"] == "%d apples" and "log-format-error" in doc


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (350e-9, "350ns"), (0.0015, "1.5ms"), (0.002, "2ms"), (1.5, "1.5s"),
     (90, "1m30s"), (3723.5, "1h2m3.5s"), (12e-6, "12µs")],
)  # fmt: skip
def test_go_duration(seconds, text):
    assert logsetup.go_duration(seconds) == text


def test_configure_leaves_an_embedding_applications_handlers_alone(tmp_path):
    root = logging.getLogger()
    handler = logging.NullHandler()
    root.addHandler(handler)
    try:
        before = list(root.handlers)
        logsetup.configure("json", "debug", "stderr")
        assert root.handlers == before
        with pytest.raises(OSError):
            logsetup.configure("json", "info", str(tmp_path / "missing" / "x.log"))
    finally:
        root.removeHandler(handler)


def test_configure_rejects_unknown_values_and_writes_files(tmp_path):
    with pytest.raises(ValueError, match="log format"):
        logsetup.configure("xml")
    with pytest.raises(ValueError, match="log level"):
        logsetup.configure("json", "loud")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        logsetup.configure("json", "info", f"{tmp_path / 'a.log'},stderr", force=True)
        logging.getLogger("kvstore.test").info("hello %s", "file")
        logging.getLogger("kvstore.test").debug("not at info")
        for h in root.handlers:
            h.flush()
        lines = (tmp_path / "a.log").read_text().splitlines()
        assert [json.loads(line)["msg"] for line in lines] == ["hello file"]
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
            h.close()
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
