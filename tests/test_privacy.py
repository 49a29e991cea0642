"""Privacy: content off by default, captured and scrubbed when asked, metadata filtered, secrets
never stored, content and metadata encrypted at rest."""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from datetime import datetime
from pathlib import Path

import anthropic
import openai
import pytest
import sqlalchemy

import obsdeco
from obsdeco.collector import sessions_in_memory
from obsdeco.privacy.encryption import EncryptionError
from obsdeco.privacy.policy import ContentPolicy
from obsdeco.privacy.scrub import Scrubber
from obsdeco.storage import WriteBatch
from obsdeco.testing import Reply, fixture_request
from tests.helpers import in_async_session, in_session

CORPUS = Path(__file__).parent / "data" / "pii_corpus.tsv"


def _corpus() -> list[tuple[str, str]]:
    lines = []
    for line in CORPUS.read_text().splitlines():
        if line and not line.startswith("#"):
            text, expected = line.split("\t")
            lines.append((text.replace("\\n", "\n"), expected.replace("\\n", "\n")))
    return lines


def test_the_corpus_is_large_enough_and_has_near_misses():
    lines = _corpus()
    assert len(lines) >= 60
    assert sum(text == expected for text, expected in lines) >= 20


@pytest.mark.parametrize(("text", "expected"), _corpus())
def test_pii_corpus(text, expected):
    assert Scrubber()(text) == expected


def test_user_patterns_and_callback_run_after_the_built_in_rules():
    scrub = Scrubber({"ORDER_ID": r"ORD-\d{6}"}, lambda text: text.replace("Acme", "<COMPANY>"))

    assert scrub("Acme order ORD-123456 for ann@example.com") == (
        "<COMPANY> order <ORDER_ID> for <EMAIL>"
    )


def test_bad_privacy_settings_are_refused_by_name():
    with pytest.raises(ValueError, match=r"pii_patterns\['BAD'\] is not a regular expression"):
        obsdeco.configure(pii_patterns={"BAD": "(unclosed"})
    with pytest.raises(ValueError, match="encryption_key must be 32 random bytes") as error:
        obsdeco.configure(encryption_key="too-short-secret-value")
    assert "too-short-secret-value" not in str(error.value)


def _stored_text(url: str) -> str:
    """Every value of every obsdeco table, as one text to search."""
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            texts = []
            for table in ("sessions", "llm_calls", "agent_spans", "request_hashes"):
                rows = connection.execute(sqlalchemy.text(f"SELECT * FROM {table}")).all()
                texts += [str(value) for row in rows for value in row]
            return "\n".join(texts)
    finally:
        engine.dispose()


def _stored_calls(url: str) -> list[sqlalchemy.Row]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return list(
                connection.execute(
                    sqlalchemy.text("SELECT prompt, completion, metadata FROM llm_calls")
                )
            )
    finally:
        engine.dispose()


def test_no_content_is_stored_by_default(configured, provider, patched, openai_client):
    collector = obsdeco.MetricsCollector()
    session = collector.start_session()
    collector.record_llm_call(
        session,
        provider="openai",
        model_name="gpt-4o",
        latency_ms=1.0,
        prompt="explicitly given prompt-canary-1",
        completion="explicitly given completion-canary-2",
    )
    collector.end_session(session)

    response, _ = in_session(
        lambda: openai_client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "prompt-canary-3"}]
        )
    )
    obsdeco.flush()

    stored = _stored_text(configured)
    assert "canary" not in stored
    assert response.choices[0].message.content not in stored
    assert all(row.prompt is None and row.completion is None for row in _stored_calls(configured))


def test_captured_content_is_stored_scrubbed_on_the_writer_thread(
    configured, provider, patched, openai_client
):
    threads: list[str] = []

    def note_thread(text: str) -> str:
        threads.append(threading.current_thread().name)
        return text

    obsdeco.configure(database_url=configured, capture_content=True, scrubber=note_thread)
    messages = [{"role": "user", "content": "Mail ann@example.com about card 4111111111111111"}]

    response, (call,) = in_session(
        lambda: openai_client.chat.completions.create(model="gpt-4o", messages=messages)
    )

    (row,) = _stored_calls(configured)
    assert json.loads(row.prompt) == {
        "messages": [{"role": "user", "content": "Mail <EMAIL> about card <CREDIT_CARD>"}]
    }
    assert json.loads(row.completion) == {
        "text": response.choices[0].message.content,
        "tool_calls": [],
    }
    assert call.prompt == row.prompt  # this process's records show what is stored
    assert threads
    assert threading.current_thread().name not in threads


@pytest.mark.parametrize(
    ("fixture", "expected_tools"),
    [
        ("openai/chat_completion_parallel_tool_calls_stream.sse", {"get_current_weather"}),
        ("anthropic/messages_tool_use_stream.sse", {"get_time", "get_weather"}),
        ("anthropic/messages_tool_use.json", {"get_time", "get_weather"}),
    ],
)
def test_streamed_text_and_tool_calls_are_captured(
    configured, provider, patched, openai_client, anthropic_client, fixture, expected_tools
):
    obsdeco.configure(database_url=configured, capture_content=True)
    provider.enqueue(Reply.fixture(fixture))
    request = fixture_request(fixture)
    client = (
        openai_client.chat.completions
        if fixture.startswith("openai")
        else (anthropic_client.messages)
    )

    def run() -> list[object]:
        result = client.create(**request)
        return list(result) if request.get("stream") else [result]

    in_session(run)

    (row,) = _stored_calls(configured)
    completion = json.loads(row.completion)
    assert completion["tool_calls"], completion
    assert {call["name"] for call in completion["tool_calls"]} == expected_tools
    for call in completion["tool_calls"]:
        assert isinstance(json.loads(call["arguments"]), dict)
    assert json.loads(row.prompt)["messages"] == json.loads(json.dumps(request["messages"]))


async def test_async_streams_are_captured(configured, provider, patched, async_openai_client):
    obsdeco.configure(database_url=configured, capture_content=True)

    async def run() -> str:
        stream = await async_openai_client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        return "".join([chunk.choices[0].delta.content or "" async for chunk in stream])

    text, _ = await in_async_session(run)

    (row,) = _stored_calls(configured)
    assert json.loads(row.completion) == {"text": text, "tool_calls": []}


def test_content_is_cut_to_the_configured_size(configured):
    obsdeco.configure(database_url=configured, capture_content=True, content_max_chars=10)
    collector = obsdeco.MetricsCollector()
    session = collector.start_session()
    collector.record_llm_call(
        session, provider="openai", model_name="gpt-4o", latency_ms=1.0, prompt="x" * 25
    )
    collector.end_session(session)
    obsdeco.flush()

    (row,) = _stored_calls(configured)
    assert row.prompt == "x" * 10 + "…[truncated 15 characters]"


def test_metadata_is_filtered_and_made_json(configured, caplog):
    obsdeco.configure(
        database_url=configured, metadata_allow=["user.*", "ticket"], metadata_deny=["*.email"]
    )
    collector = obsdeco.MetricsCollector()
    session = collector.start_session(
        metadata={"ticket": 7, "internal": "x", "user.email": "ann@example.com"}
    )
    when = datetime(2026, 1, 2, 3, 4, 5)
    before = obsdeco.stats()
    collector.record_llm_call(
        session,
        provider="openai",
        model_name="gpt-4o",
        latency_ms=1.0,
        metadata={"user.id": "u1", "user.seen": when, "user.score": float("nan"), "other": 1},
    )
    with caplog.at_level(logging.WARNING, logger="obsdeco"):
        collector.end_session(session)
        obsdeco.flush()

    (row,) = _stored_calls(configured)
    stored = row.metadata if isinstance(row.metadata, dict) else json.loads(row.metadata)
    assert stored == {"user.id": "u1", "user.seen": "2026-01-02 03:04:05"}
    assert "ann@example.com" not in _stored_text(configured)
    after = obsdeco.stats()
    assert after.metadata_values_converted - before.metadata_values_converted == 1
    assert after.metadata_values_dropped - before.metadata_values_dropped == 1
    assert "obsdeco metadata 'user.seen' is not JSON (datetime)" in caplog.text


OPENAI_KEY = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0" * 3
ANTHROPIC_KEY = "sk-ant-api03-" + "Z9y8X7w6V5u4T3s2R1q0" * 3
HEADER_SECRET = "hdr-" + "Q7w8E9r0T1y2U3i4O5p6" * 2


@pytest.mark.parametrize("capture", [False, True])
def test_secrets_are_never_stored_nor_logged(configured, provider, patched, capture, caplog):
    obsdeco.configure(database_url=configured, capture_content=capture)
    prompt = f"my keys are {OPENAI_KEY} and {ANTHROPIC_KEY}"
    with (
        caplog.at_level(logging.DEBUG),
        openai.OpenAI(
            base_url=provider.openai_base_url,
            api_key=OPENAI_KEY,
            default_headers={"X-Internal-Token": HEADER_SECRET},
            max_retries=0,
        ) as openai_client,
        anthropic.Anthropic(
            base_url=provider.anthropic_base_url,
            api_key=ANTHROPIC_KEY,
            default_headers={"Authorization": f"Bearer {HEADER_SECRET}"},
            max_retries=0,
        ) as anthropic_client,
    ):
        in_session(
            lambda: (
                openai_client.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": prompt}]
                ),
                anthropic_client.messages.create(
                    model="claude-sonnet-4-5",
                    max_tokens=16,
                    messages=[{"role": "user", "content": prompt}],
                ),
            )
        )
        provider.enqueue(Reply.error(401))
        with pytest.raises(openai.AuthenticationError):
            in_session(
                lambda: openai_client.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": prompt}]
                )
            )
        obsdeco.flush()

    stored = _stored_text(configured)
    # The SDKs' own debug logs show the request; obsdeco's log lines never do.
    logged = "\n".join(
        record.getMessage() for record in caplog.records if record.name.startswith("obsdeco")
    )
    assert len(_stored_calls(configured)) == 3
    for secret in (OPENAI_KEY, ANTHROPIC_KEY, HEADER_SECRET):
        assert secret not in stored
        assert secret not in logged
    if capture:
        assert "<API_KEY>" in stored


def _key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def test_encryption_round_trip_and_wrong_or_missing_keys(configured):
    key = _key()
    obsdeco.configure(database_url=configured, capture_content=True, encryption_key=key)
    collector = obsdeco.MetricsCollector("vault")
    session = collector.start_session(metadata={"customer": "ACME-42"})
    collector.record_llm_call(
        session,
        provider="openai",
        model_name="gpt-4o",
        latency_ms=1.0,
        prompt="the plan for ACME-42",
        completion="approved",
        metadata={"tier": "gold"},
    )
    collector.end_session(session)
    obsdeco.flush()
    sessions_in_memory.clear()

    stored = _stored_text(configured)
    for plain in ("ACME-42", "approved", "gold"):
        assert plain not in stored
    (row,) = _stored_calls(configured)
    assert row.prompt.startswith("obsdeco:v1:")
    (call,) = obsdeco.get_calls(session.id)
    assert (call.prompt, call.completion, call.metadata) == (
        "the plan for ACME-42",
        "approved",
        {"tier": "gold"},
    )
    assert obsdeco.get_report(session.id).session.metadata == {"customer": "ACME-42"}
    assert obsdeco.report("vault").totals.calls == 1

    obsdeco.configure(database_url=configured, encryption_key=_key())
    with pytest.raises(EncryptionError, match="encrypted with another key"):
        obsdeco.get_calls(session.id)
    obsdeco.configure(database_url=configured)
    with pytest.raises(EncryptionError, match=r"set\s+OBSDECO_ENCRYPTION_KEY"):
        obsdeco.get_calls(session.id)
    obsdeco.configure(database_url=configured, encryption_key=key)
    assert obsdeco.get_calls(session.id)[0].completion == "approved"  # nothing was damaged


def test_a_damaged_value_is_reported_as_such(configured):
    key = _key()
    obsdeco.configure(database_url=configured, capture_content=True, encryption_key=key)
    collector = obsdeco.MetricsCollector()
    session = collector.start_session()
    collector.record_llm_call(
        session, provider="openai", model_name="gpt-4o", latency_ms=1.0, prompt="hello"
    )
    collector.end_session(session)
    obsdeco.flush()
    sessions_in_memory.clear()
    engine = sqlalchemy.create_engine(configured)
    with engine.begin() as connection:
        token = connection.execute(sqlalchemy.text("SELECT prompt FROM llm_calls")).scalar_one()
        damaged = token[:-6] + ("AAAA==" if not token.endswith("AAAA==") else "BBBB==")
        connection.execute(sqlalchemy.text("UPDATE llm_calls SET prompt = :p"), {"p": damaged})
    engine.dispose()

    with pytest.raises(EncryptionError, match="failed authentication"):
        obsdeco.get_calls(session.id)


def test_an_encrypted_sqlite_file_with_sqlcipher(tmp_path):
    pytest.importorskip("sqlcipher3", reason="the sqlcipher extra (sqlcipher3) is not installed")
    url = f"sqlite+pysqlcipher://:file-passphrase@/{tmp_path}/cipher.db"
    obsdeco.configure(database_url=url)
    collector = obsdeco.MetricsCollector("cipher")
    session = collector.start_session()
    collector.record_llm_call(session, provider="openai", model_name="gpt-4o", latency_ms=1.0)
    collector.end_session(session)
    obsdeco.flush()
    sessions_in_memory.clear()

    assert obsdeco.report("cipher").totals.calls == 1
    assert b"llm_calls" not in (tmp_path / "cipher.db").read_bytes()  # the file is ciphertext
    obsdeco.configure(database_url=f"sqlite+pysqlcipher://:wrong@/{tmp_path}/cipher.db")
    with pytest.raises(sqlalchemy.exc.DatabaseError):
        obsdeco.report("cipher")


def test_postgresql_tls_options_pass_through(postgres_url):
    for mode, encrypted in (("disable", False), ("prefer", None)):
        url = sqlalchemy.engine.make_url(postgres_url).update_query_dict({"sslmode": mode})
        engine = sqlalchemy.create_engine(url)
        try:
            with engine.connect() as connection:
                ssl = connection.execute(
                    sqlalchemy.text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                ).scalar_one()
        finally:
            engine.dispose()
        if encrypted is not None:
            assert ssl is encrypted
    obsdeco.configure(database_url=url.render_as_string(hide_password=False))
    assert obsdeco.get_settings().database_url.endswith("sslmode=prefer")
    assert obsdeco.report().totals.calls == 0


def test_a_batch_written_again_is_not_cut_or_scrubbed_again():
    seen: list[str] = []
    settings = obsdeco.config.build_settings(
        capture_content=True, content_max_chars=5, scrubber=lambda text: seen.append(text) or text
    )
    policy = ContentPolicy(settings)
    call = obsdeco.LLMCall(
        session_id="s",
        project_name="p",
        provider="openai",
        model="m",
        latency_ms=1.0,
        prompt="abcdefgh",
    )
    batch = WriteBatch(calls=[call])

    policy.apply(batch)
    policy.apply(batch)
    policy.apply(WriteBatch(calls=[call]))

    assert call.prompt == "abcde…[truncated 3 characters]"
    assert seen == ["abcdefgh"]  # scrubbed once, before the cut


def _policy_on(prompt: str, **options) -> obsdeco.LLMCall:
    call = obsdeco.LLMCall(
        session_id="s",
        project_name="p",
        provider="openai",
        model="m",
        latency_ms=1.0,
        prompt=prompt,
        success=False,
        error_message=f"401: invalid key {OPENAI_KEY}",
    )
    policy = ContentPolicy(obsdeco.config.build_settings(capture_content=True, **options))
    policy.apply(WriteBatch(calls=[call]))
    return call


def test_a_failing_scrubber_leaves_no_content_rather_than_raw_content(caplog):
    def broken(text: str) -> str:
        raise RuntimeError("scrubber down")

    call = _policy_on("john@corp.example.com", scrubber=broken)

    assert call.prompt is None
    assert "obsdeco scrubbing failed" in caplog.text


def test_secrets_cut_in_two_are_still_scrubbed_and_error_messages_lose_secrets():
    block = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN" + "A" * 200 + "\n-----END PRIVATE KEY-----"

    call = _policy_on("x" * 20 + block + "\x00 tail", content_max_chars=40)

    # Scrubbed before the cut (the block spans it), and the NUL PostgreSQL refuses is gone.
    assert call.prompt == "x" * 20 + "<PRIVATE_KEY> tail"
    assert call.error_message == "401: invalid key <API_KEY>"


SECRETS_IN_AN_ERROR = (
    f"upstream refused key {OPENAI_KEY} (AKIAIOSFODNN7EXAMPLE / "
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY) for ada@example.com, card 4111 1111 1111 1111, "
    "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N"
)


@pytest.mark.parametrize("capture", [False, True])
def test_a_sessions_error_message_is_stored_without_secrets(configured, capture):
    obsdeco.configure(project="test", database_url=configured, capture_content=capture)

    @obsdeco.observe_session("failing")
    def handle() -> None:
        raise RuntimeError(SECRETS_IN_AN_ERROR)

    with pytest.raises(RuntimeError):
        handle()
    collector = obsdeco.MetricsCollector("test")
    explicit = collector.start_session("explicit")
    collector.end_session(explicit, error=ValueError(SECRETS_IN_AN_ERROR))
    obsdeco.flush()

    stored = _stored_text(configured)
    expected = (
        "upstream refused key <API_KEY> (<AWS_KEY> / <AWS_SECRET>) for <EMAIL>, card "
        "<CREDIT_CARD>, token <JWT>"
    )
    assert stored.count(expected) == 2
    for secret in (OPENAI_KEY, "AKIAIOSFODNN7EXAMPLE", "bPxRfiCY", "ada@example", "4111", "eyJ"):
        assert secret not in stored
