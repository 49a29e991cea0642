"""Export to files: obsdeco.export() and `obsdeco export`, on SQLite and PostgreSQL, read back
with json, csv and pyarrow."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import subprocess
import sys
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy
from sqlalchemy import event

import obsdeco
from obsdeco.collector import sessions_in_memory
from obsdeco.file_export.columns import CALL_COLUMNS, SCORE_COLUMNS, SESSION_COLUMNS, SPAN_COLUMNS
from obsdeco.runtime import get_runtime

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CALL_NAMES = [column.name for column in CALL_COLUMNS]
SESSION_NAMES = [column.name for column in SESSION_COLUMNS]
SPAN_NAMES = [column.name for column in SPAN_COLUMNS]
SCORE_NAMES = [column.name for column in SCORE_COLUMNS]
TRICKY = "naïve — 日本語 🚀\nsecond line\r\nthird\ttabbed \u2028 after LS \x01\x1f end"

# genai-prices, gpt-4o: $2.50/M input, $1.25/M cached input, $10/M output;
# gpt-4o-mini: $0.15/M input, $0.60/M output.
C1_COST = 800 * 2.5e-6 + 200 * 1.25e-6 + 100 * 10e-6  # 0.00325
C3_SAVED = 1000 * 2.5e-6 + 100 * 10e-6  # a cache hit saves its list price: 0.0035
C4_COST = 1000 * 0.15e-6 + 100 * 0.6e-6  # 0.00021
C4_SAVED = C3_SAVED - C4_COST  # routed from gpt-4o: 0.00329
C5_COST = 500 * 2.5e-6 + 50 * 10e-6  # 0.00175


def _call(collector, session, call_id, minutes, **fields):
    return collector.record_llm_call(
        session,
        id=call_id,
        timestamp=T0 + timedelta(minutes=minutes),
        provider=fields.pop("provider", "openai"),
        model_name=fields.pop("model_name", "gpt-4o"),
        latency_ms=fields.pop("latency_ms", 800.0),
        **fields,
    )


@pytest.fixture
def seeded(database_url):
    """Project shop: session 'refund' (c1-c4, two agent spans); project blog: session 'draft'
    (c5, two hours later); then a running session of shop with no calls."""
    obsdeco.configure(project="shop", database_url=database_url)
    shop, blog = obsdeco.MetricsCollector("shop"), obsdeco.MetricsCollector("blog")
    refund = shop.start_session("refund", metadata={"ticket": "T-1"})
    _call(
        shop, refund, "c1", 0, agent_name="Planner", operation="plan",
        prompt_tokens=1000, cached_tokens=200, completion_tokens=100,
        response_model="gpt-4o-2024-08-06", api="chat.completions", finish_reason="stop",
        request_hash="h1", metadata={"step": 1},
    )  # fmt: skip
    _call(
        shop, refund, "c2", 1, model_name="gpt-4o-mini", agent_name="Writer", success=False,
        error_type="rate_limit", error_message=TRICKY, retries=2, rate_limited_retries=2,
        latency_ms=12.25,
    )  # fmt: skip
    _call(
        shop, refund, "c3", 2, agent_name="Planner", prompt_tokens=1000, completion_tokens=100,
        cache_hit=True, latency_ms=1.5,
    )  # fmt: skip
    _call(
        shop, refund, "c4", 3, model_name="gpt-4o-mini", requested_model="gpt-4o",
        routed_from="gpt-4o", agent_name="Writer", operation="=1+1", prompt_tokens=1000,
        completion_tokens=100, streamed=True, time_to_first_token_ms=90.0,
    )  # fmt: skip
    planner = shop.record_agent_span(
        refund, agent_name="Planner", operation="plan", started_at=T0 - timedelta(seconds=1),
        ended_at=T0 + timedelta(seconds=2.5), span_id="span-1",
    )  # fmt: skip
    shop.record_agent_span(
        refund, agent_name="Writer", started_at=T0 + timedelta(minutes=1),
        ended_at=T0 + timedelta(minutes=4), parent_id=planner.id, success=False,
        error_type="TimeoutError", span_id="span-2",
    )  # fmt: skip
    shop.end_session(refund)
    draft = blog.start_session("draft")
    _call(blog, draft, "c5", 120, agent_name="Critic", prompt_tokens=500, completion_tokens=50)
    blog.end_session(draft)
    running = shop.start_session("still-running")
    obsdeco.flush()
    return {"refund": refund, "draft": draft, "running": running}


def _jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def _csv(path):
    with open(path, encoding="utf-8", newline="") as file:
        return list(csv.reader(file))


def _iso(moment):
    return moment.isoformat(timespec="microseconds")


# --- calls, in each format ---------------------------------------------------------------------


def test_calls_as_json_lines_exact_rows(seeded, tmp_path):
    written = obsdeco.export(tmp_path / "calls.jsonl")

    rows = _jsonl(tmp_path / "calls.jsonl")
    assert written == 5
    assert [list(row) for row in rows] == [CALL_NAMES] * 5
    assert [row["id"] for row in rows] == ["c1", "c2", "c3", "c4", "c5"]
    refund, draft = seeded["refund"].id, seeded["draft"].id
    assert rows[0] == {
        "id": "c1",
        "session_id": refund,
        "project_name": "shop",
        "timestamp": "2026-03-01T12:00:00.000000+00:00",
        "provider": "openai",
        "provider_name": "openai",
        "model": "gpt-4o",
        "response_model": "gpt-4o-2024-08-06",
        "api": "chat.completions",
        "agent_name": "Planner",
        "operation": "plan",
        "prompt_tokens": 1000,
        "completion_tokens": 100,
        "cached_tokens": 200,
        "cache_creation_tokens": None,
        "reasoning_tokens": None,
        "latency_ms": 800.0,
        "time_to_first_token_ms": None,
        "streamed": False,
        "success": True,
        "error_type": None,
        "error_message": None,
        "finish_reason": "stop",
        "tool_call_count": None,
        "retries": 0,
        "rate_limited_retries": 0,
        "cost_usd": pytest.approx(C1_COST, rel=1e-12),
        "request_hash": "h1",
        "cache_hit": None,
        "saved_usd": None,
        "requested_model": None,
        "routed_from": None,
        "shadow_model": None,
        "experiments": {},
        "metadata": {"step": 1},
        "prompt": None,
        "completion": None,
    }
    c2, c3, c4, c5 = rows[1:]
    assert (c2["success"], c2["error_type"], c2["error_message"]) == (False, "rate_limit", TRICKY)
    assert (c2["prompt_tokens"], c2["cost_usd"], c2["saved_usd"]) == (None, None, None)
    assert (c2["retries"], c2["latency_ms"]) == (2, 12.25)
    assert (c3["cache_hit"], c3["cost_usd"]) == (True, 0.0)
    assert c3["saved_usd"] == pytest.approx(C3_SAVED, rel=1e-12)
    assert (c4["model"], c4["requested_model"], c4["routed_from"]) == (
        "gpt-4o-mini",
        "gpt-4o",
        "gpt-4o",
    )
    assert c4["cost_usd"] == pytest.approx(C4_COST, rel=1e-12)
    assert c4["saved_usd"] == pytest.approx(C4_SAVED, rel=1e-12)
    assert (c4["operation"], c4["streamed"], c4["time_to_first_token_ms"]) == ("=1+1", True, 90.0)
    assert (c5["session_id"], c5["project_name"]) == (draft, "blog")
    assert c5["cost_usd"] == pytest.approx(C5_COST, rel=1e-12)
    # A calls line is an LLMCall as obsdeco records it.
    assert obsdeco.LLMCall.model_validate(rows[0]).timestamp == T0


def test_calls_as_csv_exact_rows(seeded, tmp_path):
    written = obsdeco.export(tmp_path / "calls.csv", "calls")

    header, *rows = _csv(tmp_path / "calls.csv")
    assert written == 5
    assert header == CALL_NAMES
    by_id = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    assert list(by_id) == ["c1", "c2", "c3", "c4", "c5"]
    c1 = by_id["c1"]
    assert c1 == {
        "id": "c1",
        "session_id": seeded["refund"].id,
        "project_name": "shop",
        "timestamp": "2026-03-01T12:00:00.000000+00:00",
        "provider": "openai",
        "provider_name": "openai",
        "model": "gpt-4o",
        "response_model": "gpt-4o-2024-08-06",
        "api": "chat.completions",
        "agent_name": "Planner",
        "operation": "plan",
        "prompt_tokens": "1000",
        "completion_tokens": "100",
        "cached_tokens": "200",
        "cache_creation_tokens": "",
        "reasoning_tokens": "",
        "latency_ms": "800.0",
        "time_to_first_token_ms": "",
        "streamed": "false",
        "success": "true",
        "error_type": "",
        "error_message": "",
        "finish_reason": "stop",
        "tool_call_count": "",
        "retries": "0",
        "rate_limited_retries": "0",
        "cost_usd": c1["cost_usd"],
        "request_hash": "h1",
        "cache_hit": "",
        "saved_usd": "",
        "requested_model": "",
        "routed_from": "",
        "shadow_model": "",
        "experiments": "{}",
        "metadata": '{"step":1}',
        "prompt": "",
        "completion": "",
    }
    assert float(c1["cost_usd"]) == pytest.approx(C1_COST, rel=1e-12)
    assert by_id["c2"]["error_message"] == TRICKY  # newlines, CR and tabs quoted, not mangled
    assert (by_id["c3"]["cache_hit"], by_id["c3"]["cost_usd"]) == ("true", "0.0")
    assert float(by_id["c4"]["saved_usd"]) == pytest.approx(C4_SAVED, rel=1e-12)
    # A text cell that a spreadsheet would evaluate is prefixed with an apostrophe.
    assert by_id["c4"]["operation"] == "'=1+1"


def test_calls_as_parquet_exact_rows_and_types(seeded, tmp_path):
    written = obsdeco.export(tmp_path / "calls.parquet")

    table = pq.read_table(tmp_path / "calls.parquet")
    assert written == 5
    assert table.column_names == CALL_NAMES
    types = {field.name: field.type for field in table.schema}
    assert types["timestamp"] == pa.timestamp("us", tz="UTC")
    assert types["prompt_tokens"] == pa.int64()
    assert (types["cost_usd"], types["latency_ms"]) == (pa.float64(), pa.float64())
    assert (types["success"], types["cache_hit"]) == (pa.bool_(), pa.bool_())
    assert (types["metadata"], types["model"]) == (pa.string(), pa.string())
    assert table.schema.field("cached_tokens").metadata == {
        b"description": b"the cache-read part of prompt_tokens"
    }
    rows = table.to_pylist()
    assert [row["id"] for row in rows] == ["c1", "c2", "c3", "c4", "c5"]
    c1, c2, c3, c4, _ = rows
    assert c1["timestamp"] == T0
    assert (c1["prompt_tokens"], c1["cached_tokens"], c1["reasoning_tokens"]) == (1000, 200, None)
    assert c1["cost_usd"] == pytest.approx(C1_COST, rel=1e-12)
    assert (c1["metadata"], c1["experiments"]) == ('{"step": 1}', "{}")
    assert (c2["error_message"], c2["cost_usd"], c2["success"]) == (TRICKY, None, False)
    assert (c3["cache_hit"], c3["cost_usd"]) == (True, 0.0)
    assert c4["saved_usd"] == pytest.approx(C4_SAVED, rel=1e-12)
    assert c4["operation"] == "=1+1"  # Parquet holds text exactly


def test_every_format_holds_the_same_values(seeded, tmp_path):
    for suffix in ("jsonl", "csv", "parquet"):
        obsdeco.export(tmp_path / f"calls.{suffix}")
    from_json = _jsonl(tmp_path / "calls.jsonl")
    _header, *from_csv = _csv(tmp_path / "calls.csv")
    from_parquet = pq.read_table(tmp_path / "calls.parquet").to_pylist()

    for line, cells, record in zip(from_json, from_csv, from_parquet, strict=True):
        for column, cell in zip(CALL_COLUMNS, cells, strict=True):
            value, stored = line[column.name], record[column.name]
            if column.kind == "json":
                assert json.loads(cell) == json.loads(stored) == value
            elif column.kind == "timestamp":
                assert datetime.fromisoformat(cell) == datetime.fromisoformat(value) == stored
            elif value is None:
                assert (cell, stored) == ("", None)
            elif column.kind == "boolean":
                assert cell == str(value).lower()
                assert stored is value
            else:
                assert stored == value
                assert cell.removeprefix("'") == str(value)


# --- sessions and spans --------------------------------------------------------------------------


def test_sessions_with_their_stored_totals(seeded, tmp_path):
    written = obsdeco.export(tmp_path / "sessions.jsonl", "sessions")

    rows = _jsonl(tmp_path / "sessions.jsonl")
    refund, draft, running = seeded["refund"], seeded["draft"], seeded["running"]
    assert written == 3
    assert [list(row) for row in rows] == [SESSION_NAMES] * 3
    assert [row["id"] for row in rows] == [refund.id, draft.id, running.id]
    assert rows[0] == {
        "id": refund.id,
        "project_name": "shop",
        "name": "refund",
        "parent_id": None,
        "started_at": _iso(refund.started_at),
        "ended_at": _iso(refund.ended_at),
        "duration_ms": pytest.approx(refund.duration_ms),
        "status": "ok",
        "error_type": None,
        "error_message": None,
        "calls": 4,
        "errors": 1,
        "prompt_tokens": 3000,
        "completion_tokens": 300,
        "cached_tokens": 200,
        "reasoning_tokens": 0,
        "total_tokens": 3300,
        "cost_usd": pytest.approx(C1_COST + C4_COST, rel=1e-12),
        "total_latency_ms": pytest.approx(800.0 + 12.25 + 1.5 + 800.0),
        "experiments": {},
        "metadata": {"ticket": "T-1"},
    }
    assert (rows[1]["project_name"], rows[1]["calls"]) == ("blog", 1)
    assert rows[1]["cost_usd"] == pytest.approx(C5_COST, rel=1e-12)
    # A running session has no stored totals yet: empty, not zero.
    assert rows[2]["status"] == "running"
    assert rows[2]["ended_at"] is rows[2]["calls"] is rows[2]["cost_usd"] is None


def test_sessions_in_csv_and_parquet(seeded, tmp_path):
    obsdeco.export(tmp_path / "sessions.csv", "sessions", project="shop")
    obsdeco.export(tmp_path / "sessions.parquet", "sessions", project="shop")

    header, *rows = _csv(tmp_path / "sessions.csv")
    table = pq.read_table(tmp_path / "sessions.parquet")
    assert header == table.column_names == SESSION_NAMES
    assert [row[2] for row in rows] == ["refund", "still-running"]
    refund = dict(zip(header, rows[0], strict=True))
    assert (refund["calls"], refund["total_tokens"], refund["metadata"]) == (
        "4",
        "3300",
        '{"ticket":"T-1"}',
    )
    assert dict(zip(header, rows[1], strict=True))["calls"] == ""
    records = table.to_pylist()
    assert records[0]["started_at"] == seeded["refund"].started_at
    assert (records[0]["calls"], records[1]["calls"]) == (4, None)
    assert table.schema.field("started_at").type == pa.timestamp("us", tz="UTC")


def test_agent_spans(seeded, tmp_path):
    written = obsdeco.export(tmp_path / "spans.csv", "spans")
    obsdeco.export(tmp_path / "spans.parquet", "spans")

    header, *rows = _csv(tmp_path / "spans.csv")
    assert written == 2
    assert header == SPAN_NAMES
    assert rows == [
        [
            "span-1", seeded["refund"].id, "shop", "", "Planner", "plan",
            "2026-03-01T11:59:59.000000+00:00", "2026-03-01T12:00:02.500000+00:00", "3500.0",
            "true", "",
        ],
        [
            "span-2", seeded["refund"].id, "shop", "span-1", "Writer", "",
            "2026-03-01T12:01:00.000000+00:00", "2026-03-01T12:04:00.000000+00:00", "180000.0",
            "false", "TimeoutError",
        ],
    ]  # fmt: skip
    records = pq.read_table(tmp_path / "spans.parquet").to_pylist()
    assert [(r["id"], r["duration_ms"], r["success"]) for r in records] == [
        ("span-1", 3500.0, True),
        ("span-2", 180000.0, False),
    ]


def test_scores(seeded, tmp_path):
    refund = seeded["refund"].id
    obsdeco.score(refund, "helpful", True, comment="=HYPERLINK(x)")
    obsdeco.score("c1", "judge", 0.25)
    obsdeco.score(seeded["draft"].id, "helpful", 0.5)
    obsdeco.flush()

    assert obsdeco.export(tmp_path / "scores.csv", "scores", project="shop") == 2
    header, *rows = _csv(tmp_path / "scores.csv")
    assert header == SCORE_NAMES
    assert [row[1:8] + row[9:] for row in rows] == [
        [refund, refund, "", "shop", "helpful", "1.0", "'=HYPERLINK(x)", "", "", "{}"],
        ["c1", refund, "c1", "shop", "judge", "0.25", "", "gpt-4o-2024-08-06", "Planner", "{}"],
    ]  # fmt: skip
    out = io.StringIO()
    assert obsdeco.export(out, "scores", "jsonl", model="gpt-4o-2024-08-06") == 1
    [record] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert (record["target_id"], record["value"], record["comment"]) == ("c1", 0.25, None)
    obsdeco.export(tmp_path / "scores.parquet", "scores")
    values = pq.read_table(tmp_path / "scores.parquet").column("value").to_pylist()
    assert values == [1.0, 0.25, 0.5]


# --- filters and ranges --------------------------------------------------------------------------


def _ids(tmp_path, what="calls", **filters):
    out = io.StringIO()
    obsdeco.export(out, what, "jsonl", **filters)
    return [json.loads(line)["id"] for line in out.getvalue().splitlines()]


def test_filters_are_those_of_reports(seeded, tmp_path):
    refund, draft, running = seeded["refund"].id, seeded["draft"].id, seeded["running"].id

    assert _ids(tmp_path, project="shop") == ["c1", "c2", "c3", "c4"]
    assert _ids(tmp_path, project="blog") == ["c5"]
    assert _ids(tmp_path, since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3)) == [
        "c2",
        "c3",
    ]  # [since, until)
    # The model as reports key it: the returned one, else the requested one.
    assert _ids(tmp_path, model="gpt-4o-2024-08-06") == ["c1"]
    assert _ids(tmp_path, model="gpt-4o") == ["c3", "c5"]
    assert _ids(tmp_path, model="gpt-4o-mini") == ["c2", "c4"]
    assert _ids(tmp_path, agent="Writer") == ["c2", "c4"]
    assert _ids(tmp_path, session_id=draft) == ["c5"]
    assert _ids(tmp_path, project="shop", agent="Planner", model="gpt-4o") == ["c3"]

    assert _ids(tmp_path, "sessions", project="shop") == [refund, running]
    assert _ids(tmp_path, "sessions", model="gpt-4o-mini") == [refund]
    assert _ids(tmp_path, "sessions", agent="Critic") == [draft]
    assert _ids(tmp_path, "sessions", session_id=running) == [running]
    started = seeded["draft"].started_at
    assert _ids(tmp_path, "sessions", since=started) == [draft, running]
    assert _ids(tmp_path, "sessions", until=started) == [refund]

    assert _ids(tmp_path, "spans", agent="Writer") == ["span-2"]
    assert _ids(tmp_path, "spans", since=T0) == ["span-2"]
    assert _ids(tmp_path, "spans", project="blog") == []
    assert _ids(tmp_path, "spans", model="gpt-4o-mini") == ["span-1", "span-2"]
    assert _ids(tmp_path, "spans", model="nope") == []


@pytest.mark.parametrize("what", ["calls", "sessions", "spans", "scores"])
def test_an_empty_range_writes_an_empty_table(seeded, tmp_path, what):
    empty = {"since": T0 + timedelta(days=3650), "until": T0 + timedelta(days=3651)}

    counts = [obsdeco.export(tmp_path / f"{what}.{suffix}", what, **empty) for suffix in
              ("jsonl", "csv", "parquet")]  # fmt: skip

    names = {
        "calls": CALL_NAMES,
        "sessions": SESSION_NAMES,
        "spans": SPAN_NAMES,
        "scores": SCORE_NAMES,
    }[what]
    assert counts == [0, 0, 0]
    assert (tmp_path / f"{what}.jsonl").read_bytes() == b""
    assert _csv(tmp_path / f"{what}.csv") == [names]
    table = pq.read_table(tmp_path / f"{what}.parquet")
    assert (table.num_rows, table.column_names) == (0, names)


def test_text_round_trips_in_every_format(configured, tmp_path):
    """Unicode, newlines, CR, tabs, U+2028, control characters and formula-like text; a NUL is
    dropped when stored (neither database keeps it)."""
    texts = [TRICKY, '"quoted", with commas', "=HYPERLINK(\"http://x\")", "-2", "+1", "@me",
             "\tlead tab", "", "x\x00y"]  # fmt: skip
    collector = obsdeco.MetricsCollector("text")
    session = collector.start_session("text")
    for index, text in enumerate(texts):
        _call(
            collector, session, f"t{index}", index, error_message=text, success=False,
            metadata={"text": text.replace("\x00", "")},
        )  # fmt: skip
    collector.end_session(session)
    stored = [text.replace("\x00", "") for text in texts]

    for suffix in ("jsonl", "csv", "parquet"):
        obsdeco.export(tmp_path / f"t.{suffix}", project="text")
    lines = (tmp_path / "t.jsonl").read_text(encoding="utf-8").split("\n")
    header, *rows = _csv(tmp_path / "t.csv")
    records = pq.read_table(tmp_path / "t.parquet").to_pylist()

    assert len(lines) == len(texts) + 1  # one line per row: no raw newline or U+2028 inside
    assert "\u2028" not in lines[0]
    assert "\\u2028" in lines[0]
    from_json = [json.loads(line) for line in lines[:-1]]
    message = header.index("error_message")
    assert [row["error_message"] or "" for row in from_json] == stored
    assert [row["metadata"]["text"] for row in from_json] == stored
    assert [record["error_message"] or "" for record in records] == stored
    assert [json.loads(record["metadata"])["text"] for record in records] == stored
    escaped = ["'" + text if text[:1] in ("=", "+", "-", "@", "\t") else text for text in stored]
    assert [row[message] for row in rows] == escaped
    assert escaped[2:7] == ['\'=HYPERLINK("http://x")', "'-2", "'+1", "'@me", "'\tlead tab"]
    assert [json.loads(row[header.index("metadata")])["text"] for row in rows] == stored


# --- encryption --------------------------------------------------------------------------------


def test_encrypted_content_is_decrypted_with_the_key_else_written_as_stored(configured, tmp_path):
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    obsdeco.configure(database_url=configured, capture_content=True, encryption_key=key)
    collector = obsdeco.MetricsCollector("vault")
    session = collector.start_session(metadata={"customer": "ACME-42"})
    collector.record_llm_call(
        session, provider="openai", model_name="gpt-4o", latency_ms=1.0,
        prompt="the plan for ACME-42", completion="approved", metadata={"tier": "gold"},
    )  # fmt: skip
    collector.end_session(session)
    obsdeco.flush()
    sessions_in_memory.clear()

    obsdeco.export(tmp_path / "open.jsonl")
    obsdeco.export(tmp_path / "open-sessions.jsonl", "sessions")
    obsdeco.configure(database_url=configured)  # no key
    obsdeco.export(tmp_path / "sealed.jsonl")
    obsdeco.export(tmp_path / "sealed-sessions.jsonl", "sessions")

    (opened,) = _jsonl(tmp_path / "open.jsonl")
    assert (opened["prompt"], opened["completion"], opened["metadata"]) == (
        "the plan for ACME-42",
        "approved",
        {"tier": "gold"},
    )
    assert _jsonl(tmp_path / "open-sessions.jsonl")[0]["metadata"] == {"customer": "ACME-42"}
    (sealed,) = _jsonl(tmp_path / "sealed.jsonl")
    assert sealed["prompt"].startswith("obsdeco:v1:")
    assert sealed["completion"].startswith("obsdeco:v1:")
    assert list(sealed["metadata"]) == ["obsdeco_encrypted"]
    sealed_text = (tmp_path / "sealed.jsonl").read_text() + (
        tmp_path / "sealed-sessions.jsonl"
    ).read_text()
    for plain in ("ACME-42", "approved", "gold"):
        assert plain not in sealed_text


# --- streaming -----------------------------------------------------------------------------------


class _PageRecorder(io.StringIO):
    """A file that notes, at each write, how many pages the store had been asked for."""

    def __init__(self, selects):
        super().__init__()
        self.selects = selects
        self.writes = []

    def write(self, text):
        self.writes.append((len(self.selects), text.count("\n")))
        return super().write(text)


def test_the_store_is_read_a_page_at_a_time_as_rows_are_written(seeded):
    engine = get_runtime().backend.engine
    selects = []

    def note(_connection, _cursor, statement, *_args):
        if "FROM llm_calls" in statement and "LIMIT" in statement:
            selects.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    try:
        out = _PageRecorder(selects)
        written = obsdeco.export(out, "calls", "jsonl", batch_size=2)
    finally:
        event.remove(engine, "before_cursor_execute", note)

    # Pages of 2, 2 and 1 rows: each page read only once the one before had been written.
    assert written == 5
    assert out.writes == [(1, 2), (2, 2), (3, 1)]
    assert [json.loads(line)["id"] for line in out.getvalue().splitlines()] == [
        "c1", "c2", "c3", "c4", "c5"
    ]  # fmt: skip


def test_calls_with_the_same_timestamp_are_paged_by_id(configured, tmp_path):
    collector = obsdeco.MetricsCollector("same")
    session = collector.start_session()
    for call_id in ("b", "a", "d", "c", "e"):
        _call(collector, session, call_id, 0)
    collector.end_session(session)

    ids = [_ids(tmp_path, project="same", batch_size=size) for size in (1, 2, 5, 100)]

    assert ids == [["a", "b", "c", "d", "e"]] * 4


_SEED_SQL = {
    "sqlite": """
        WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < :rows)
        INSERT INTO llm_calls (id, session_id, project_name, timestamp, provider, model,
            agent_name, prompt_tokens, completion_tokens, latency_ms, streamed, success,
            retries, rate_limited_retries, metadata)
        SELECT printf('%032x', n), printf('%032x', n / 20), 'bulk',
            strftime('%Y-%m-%d %H:%M:%f000', '2026-01-01', '+' || n || ' seconds'), 'openai',
            'gpt-4o', 'Planner', 1000, 100, 500.0, 0, 1, 0, 0, '{}'
        FROM g
    """,
}


def _peak_bytes(export) -> tuple[int, int]:
    tracemalloc.start()
    try:
        written = export()
        return written, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_range(sqlite_url, tmp_path):
    rows = 50_000
    obsdeco.configure(database_url=sqlite_url)
    get_runtime().backend.project_names()  # the schema, made before the rows are added
    engine = sqlalchemy.create_engine(sqlite_url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(_SEED_SQL["sqlite"]), {"rows": rows})
    engine.dispose()
    tenth = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=rows // 10 + 1)
    obsdeco.export(tmp_path / "warm.csv", project="bulk", until=tenth)  # imports, caches

    some, small_peak = _peak_bytes(
        lambda: obsdeco.export(tmp_path / "some.csv", project="bulk", until=tenth)
    )
    every, peak = _peak_bytes(lambda: obsdeco.export(tmp_path / "bulk.csv", project="bulk"))

    assert (some, every) == (rows // 10, rows)
    with open(tmp_path / "bulk.csv", newline="") as file:
        assert sum(1 for _ in csv.reader(file)) == rows + 1
    # Ten times the rows, about the same peak: a page of 1,000 calls, never all 50,000 (which
    # would take hundreds of megabytes).
    assert peak < small_peak * 1.25 + 1_000_000, (small_peak, peak)
    assert peak < 20_000_000, peak


# --- bad input -----------------------------------------------------------------------------------


def test_bad_input_is_a_value_error_naming_the_problem(seeded, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"what must be one of 'calls', 'sessions', 'spans'"):
        obsdeco.export(tmp_path / "x.jsonl", "scorez")
    with pytest.raises(ValueError, match=r"format must be one of 'jsonl', 'csv', 'parquet'"):
        obsdeco.export(tmp_path / "x.jsonl", format="xlsx")
    with pytest.raises(ValueError, match=r"cannot tell the format of '.*x\.txt' from its suffix"):
        obsdeco.export(tmp_path / "x.txt")
    with pytest.raises(ValueError, match="a file object has no suffix"):
        obsdeco.export(io.StringIO())
    with pytest.raises(ValueError, match=r"since \(2026-03-02T00:00:00\+00:00\) is after until"):
        obsdeco.export(tmp_path / "x.jsonl", since=T0 + timedelta(hours=12), until=T0)
    with pytest.raises(ValueError, match="since must be timezone-aware"):
        obsdeco.export(tmp_path / "x.jsonl", since=datetime(2026, 3, 1))
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        obsdeco.export(tmp_path / "x.jsonl", batch_size=0)
    with pytest.raises(ValueError, match="Parquet is binary"):
        obsdeco.export(io.StringIO(), format="parquet")
    with pytest.raises(TypeError, match="target must be a path or an open file, got int"):
        obsdeco.export(3, format="csv")  # type: ignore[arg-type]
    real_find_spec = obsdeco.file_export.api.importlib.util.find_spec
    monkeypatch.setattr(
        obsdeco.file_export.api.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "pyarrow" else real_find_spec(name, *args),
    )
    with pytest.raises(ValueError, match=r"needs pyarrow.*pip install 'obsdeco\[parquet\]'"):
        obsdeco.export(tmp_path / "x.parquet")
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith("x")) == []


def test_a_failed_export_leaves_the_old_file_in_place(seeded, tmp_path, monkeypatch):
    target = tmp_path / "calls.jsonl"
    target.write_text("previous export\n")

    def broken(*_args, **_kwargs):
        raise RuntimeError("store went away")
        yield

    monkeypatch.setattr(type(get_runtime().backend.inner), "iter_calls", broken)
    with pytest.raises(RuntimeError, match="store went away"):
        obsdeco.export(target)

    assert target.read_text() == "previous export\n"
    assert [path.name for path in tmp_path.iterdir() if "calls" in path.name] == ["calls.jsonl"]


def test_file_objects_text_and_binary(seeded, tmp_path):
    text, binary, parquet = io.StringIO(), io.BytesIO(), io.BytesIO()

    assert obsdeco.export(text, "spans", "csv") == 2
    assert obsdeco.export(binary, "spans", "csv") == 2
    assert obsdeco.export(parquet, "spans", "parquet") == 2
    with open(tmp_path / "named.csv", "w", newline="") as file:
        obsdeco.export(file, "spans")  # the format from the file's name

    assert binary.getvalue().decode() == text.getvalue()
    assert (tmp_path / "named.csv").read_bytes().decode() == text.getvalue()
    assert not binary.closed
    assert not parquet.closed
    assert pq.read_table(io.BytesIO(parquet.getvalue())).num_rows == 2


# --- the command line ----------------------------------------------------------------------------


def _obsdeco(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "obsdeco.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_exports_to_files_and_stdout(seeded, tmp_path, database_url):
    to_file = _obsdeco(
        "export", "calls", str(tmp_path / "shop.csv"), "--database-url", database_url,
        "--project", "shop", "--agent", "Writer",
    )  # fmt: skip
    to_stdout = _obsdeco("export", "sessions", "-", "--database-url", database_url)
    as_csv = _obsdeco(
        "export", "spans", "-", "--format", "csv", "--database-url", database_url,
        "--since", "2026-03-01T12:00", "--until", "2026-03-02",
    )  # fmt: skip
    parquet = _obsdeco(
        "export", "calls", str(tmp_path / "all.parquet"), "--database-url", database_url,
        "--model", "gpt-4o", "--session", seeded["refund"].id,
    )  # fmt: skip

    assert to_file.returncode == 0, to_file.stderr
    assert to_file.stdout == ""
    assert to_file.stderr.strip() == f"wrote 2 rows of calls to {tmp_path / 'shop.csv'}"
    assert [row[0] for row in _csv(tmp_path / "shop.csv")] == ["id", "c2", "c4"]
    assert to_stdout.returncode == 0, to_stdout.stderr
    lines = [json.loads(line) for line in to_stdout.stdout.splitlines()]
    assert [line["name"] for line in lines] == ["refund", "draft", "still-running"]
    assert to_stdout.stderr.strip() == "wrote 3 rows of sessions to stdout"
    assert list(csv.reader(io.StringIO(as_csv.stdout, newline=""))) [1:] == [
        [
            "span-2", seeded["refund"].id, "shop", "span-1", "Writer", "",
            "2026-03-01T12:01:00.000000+00:00", "2026-03-01T12:04:00.000000+00:00", "180000.0",
            "false", "TimeoutError",
        ]
    ]  # fmt: skip
    assert parquet.returncode == 0, parquet.stderr
    assert pq.read_table(tmp_path / "all.parquet").column("id").to_pylist() == ["c3"]


def test_cli_errors(seeded, tmp_path, database_url):
    url = ("--database-url", database_url)
    unknown_what = _obsdeco("export", "alerts", "-", *url)
    unknown_format = _obsdeco("export", "calls", "-", "--format", "xml", *url)
    bad_suffix = _obsdeco("export", "calls", str(tmp_path / "calls.txt"), *url)
    parquet_stdout = _obsdeco("export", "calls", "-", "--format", "parquet", *url)
    backwards = _obsdeco("export", "calls", "-", "--since", "1d", "--until", "2d", *url)
    missing_dir = _obsdeco("export", "calls", str(tmp_path / "nowhere" / "c.csv"), *url)

    assert unknown_what.returncode == 2
    assert "invalid choice: 'alerts' (choose from calls, sessions, spans, scores)" in re.sub(
        r"'(calls|sessions|spans|scores)'", r"\1", unknown_what.stderr
    )
    assert unknown_format.returncode == 2
    assert "invalid choice: 'xml'" in unknown_format.stderr
    assert bad_suffix.returncode == 2
    assert "obsdeco export: cannot tell the format of" in bad_suffix.stderr
    assert parquet_stdout.returncode == 2
    assert parquet_stdout.stderr.strip() == (
        "obsdeco export: Parquet cannot go to stdout; give a file path"
    )
    assert backwards.returncode == 2
    assert re.search(r"obsdeco export: since \(.*\) is after until \(.*\)", backwards.stderr)
    assert missing_dir.returncode == 2
    assert missing_dir.stderr.strip() == (
        f"obsdeco export: cannot write {tmp_path / 'nowhere' / 'c.csv'}: there is no directory "
        f"{tmp_path / 'nowhere'}"
    )
    assert backwards.stdout == parquet_stdout.stdout == ""


# --- the README's tables -------------------------------------------------------------------------


def test_the_readme_documents_every_column_in_order():
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Export to files", 1)[1].split("\n## ", 1)[0]
    for what, columns in (("calls", CALL_COLUMNS), ("sessions", SESSION_COLUMNS),
                          ("spans", SPAN_COLUMNS), ("scores", SCORE_COLUMNS)):  # fmt: skip
        table = section.split(f"<!-- columns: {what} -->", 1)[1].split("\n\n", 1)[0]
        documented = [
            tuple(cell.strip().strip("`") for cell in line.strip("|").split("|")[:2])
            for line in table.strip().splitlines()[2:]
        ]
        assert documented == [(column.name, column.kind) for column in columns], what
