"""patch_all / unpatch_all, per-target guards, the explicit integrations, and do-no-harm."""

from __future__ import annotations

import concurrent.futures
import importlib.util
import logging
import subprocess
import sys
import textwrap

import anthropic
import httpx
import httpx2
import openai
import pytest

import obsdeco
from obsdeco.collector import implicit_session
from obsdeco.integrations import AnthropicIntegration, OpenAIIntegration
from tests.conftest import count_rows

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
# dspy is an optional client (the frameworks extra): patched when installed.
DSPY = ["dspy"] if importlib.util.find_spec("dspy") else []
ALL = ["openai", "anthropic", "google-genai", *DSPY, "http", "threadpool"]


def _dspy_seams() -> dict[str, object]:
    if not DSPY:
        return {}
    lm15 = importlib.import_module("dspy._vendor.lm15.providers.base")
    lm15_async = importlib.import_module("dspy._vendor.lm15.providers.async_base")
    return {
        "dspy sync": lm15.BaseProviderLM.__dict__["_send"],
        "dspy sync stream": lm15.BaseProviderLM.__dict__["_stream_raw"],
        "dspy async": lm15_async.AsyncBaseProviderLM.__dict__["_send"],
        "dspy async stream": lm15_async.AsyncBaseProviderLM.__dict__["_stream_raw"],
        "dspy events": lm15.__dict__["parse_sse"],
        "dspy async events": lm15_async.__dict__["aparse_sse"],
    }


def _seams() -> dict[str, object]:
    return {
        "openai sync": openai._base_client.SyncAPIClient.__dict__["request"],
        "openai async": openai._base_client.AsyncAPIClient.__dict__["request"],
        "anthropic sync": anthropic._base_client.SyncAPIClient.__dict__["request"],
        "anthropic async": anthropic._base_client.AsyncAPIClient.__dict__["request"],
        **_dspy_seams(),
        "httpx sync": httpx.Client.__dict__["send"],
        "httpx async": httpx.AsyncClient.__dict__["send"],
        "httpx2 sync": httpx2.Client.__dict__["send"],
        "httpx2 async": httpx2.AsyncClient.__dict__["send"],
        "threadpool": concurrent.futures.ThreadPoolExecutor.__dict__["submit"],
    }


def _implicit_calls() -> list[obsdeco.LLMCall]:
    obsdeco.flush()
    try:
        return obsdeco.get_calls(implicit_session().id)
    except LookupError:
        return []


def test_patch_all_is_idempotent_and_unpatch_all_restores_the_originals(provider, openai_client):
    originals = _seams()

    assert obsdeco.patch_all() == [
        "openai",
        "anthropic",
        "google-genai",
        *DSPY,
        "http",
        "threadpool",
    ]
    patched_once = _seams()
    assert obsdeco.patch_all() == [
        "openai",
        "anthropic",
        "google-genai",
        *DSPY,
        "http",
        "threadpool",
    ]
    assert _seams() == patched_once
    assert all(patched_once[name] is not originals[name] for name in originals)

    openai_client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(_implicit_calls()) == 1  # patched twice, recorded once

    obsdeco.unpatch_all()
    assert all(_seams()[name] is originals[name] for name in originals)
    openai_client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(_implicit_calls()) == 1


def test_one_missing_target_disables_only_itself(monkeypatch, caplog, provider, anthropic_client):
    monkeypatch.delattr(anthropic._base_client.AsyncAPIClient, "request")

    with caplog.at_level(logging.WARNING, logger="obsdeco"):
        names = obsdeco.patch_all()
    try:
        assert names == ALL
        assert "anthropic._base_client.AsyncAPIClient" in caplog.text
        anthropic_client.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=MESSAGES)
        assert len(_implicit_calls()) == 1
    finally:
        obsdeco.unpatch_all()


def test_an_sdk_that_is_not_installed_is_skipped(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "anthropic" else find_spec(name, *args),
    )
    try:
        assert obsdeco.patch_all() == ["openai", "google-genai", *DSPY, "http", "threadpool"]
    finally:
        obsdeco.unpatch_all()


def test_explicit_wrap_completion_records_once_with_or_without_patching(provider, openai_client):
    obs = obsdeco.Observatory(project_name="my-project")
    integration = OpenAIIntegration(obs.collector)

    with obs.track("explicit") as session:
        response = integration.wrap_completion(
            client=openai_client, model="gpt-4o", messages=MESSAGES, agent_name="MyAgent"
        )
        openai_client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # not patched
        obsdeco.patch_all()
        try:
            integration.wrap_completion(
                client=openai_client, model="gpt-4o-mini", messages=MESSAGES, operation="qa"
            )
        finally:
            obsdeco.unpatch_all()

    assert isinstance(response, openai.types.chat.ChatCompletion)
    calls = obsdeco.get_calls(session.id)
    assert [(c.model, c.agent_name, c.operation) for c in calls] == [
        ("gpt-4o", "MyAgent", None),
        ("gpt-4o-mini", None, "qa"),
    ]
    assert calls[0].prompt_tokens == response.usage.prompt_tokens
    assert calls[0].completion_tokens == response.usage.completion_tokens


def test_explicit_wrap_message_records_the_anthropic_call(provider, anthropic_client):
    obs = obsdeco.Observatory(project_name="my-project")

    with obs.track("explicit") as session:
        message = AnthropicIntegration(obs.collector).wrap_message(
            client=anthropic_client,
            model="claude-sonnet-4-6",
            messages=MESSAGES,
            max_tokens=256,
            agent_name="Writer",
        )

    [call] = obsdeco.get_calls(session.id)
    assert call.agent_name == "Writer"
    assert call.completion_tokens == message.usage.output_tokens
    assert call.prompt_tokens == message.usage.input_tokens


async def test_explicit_wrap_completion_on_an_async_client(provider, async_openai_client):
    obs = obsdeco.Observatory(project_name="my-project")

    with obs.track("explicit-async") as session:
        response = await OpenAIIntegration(obs.collector).wrap_completion(
            client=async_openai_client, model="gpt-4o", messages=MESSAGES, agent_name="Async"
        )

    [call] = obsdeco.get_calls(session.id)
    assert call.agent_name == "Async"
    assert call.completion_tokens == response.usage.completion_tokens


# --- do no harm: a fault at each step of obsdeco never reaches the user's call -----------------


def _faulty(*_args, **_kwargs):
    raise RuntimeError("injected obsdeco fault")


@pytest.mark.parametrize(
    "target",
    [
        "obsdeco.integrations.recorder.current_agent",  # starting the recorder
        "obsdeco.integrations.openai.OpenAIFormat.response_facts",  # reading the response
        "obsdeco.integrations.recorder.request_hash",  # building the record (writer thread)
        "obsdeco.integrations.recorder.keep",  # handing it to the collector
        "obsdeco.runtime._Pipeline.submit",  # queueing it
    ],
)
def test_a_fault_inside_obsdeco_never_reaches_the_call(
    monkeypatch, caplog, patched, provider, openai_client, target
):
    unpatched = openai.OpenAI(base_url=provider.openai_base_url, api_key="sk-test", max_retries=0)
    monkeypatch.setattr("obsdeco.guard.faults._places", set())
    monkeypatch.setattr(target, _faulty)
    faults_before = obsdeco.stats().internal_faults

    with caplog.at_level(logging.ERROR, logger="obsdeco"):
        response = openai_client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        stream = openai_client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True
        )
        chunks = [chunk.choices[0].delta.content for chunk in stream if chunk.choices]
        obsdeco.flush()  # records are built on the writer thread: their faults surface there

    obsdeco.unpatch_all()
    expected = unpatched.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert response.choices[0].message == expected.choices[0].message
    assert "".join(filter(None, chunks)) == expected.choices[0].message.content
    assert "injected obsdeco fault" in caplog.text
    assert obsdeco.stats().internal_faults > faults_before


def test_a_fault_is_logged_once_per_place_and_counted_every_time(monkeypatch, caplog):
    monkeypatch.setattr("obsdeco.guard.faults._places", set())
    monkeypatch.setattr(obsdeco.MetricsCollector, "start_session", _faulty)
    before = obsdeco.stats().internal_faults

    @obsdeco.observe_session
    def handle(value: int) -> int:
        return value * 2

    with caplog.at_level(logging.ERROR, logger="obsdeco"):
        assert [handle(n) for n in range(3)] == [0, 2, 4]

    assert [record.getMessage() for record in caplog.records] == [
        "obsdeco fault in starting a session or agent (ignored; your code is unaffected; later "
        "faults here are counted in obsdeco.stats().internal_faults, not logged)"
    ]
    assert obsdeco.stats().internal_faults == before + 3


def test_a_fault_in_stream_observation_keeps_every_chunk(
    monkeypatch, patched, provider, openai_client
):
    monkeypatch.setattr("obsdeco.integrations.openai._ChatStream.observe", _faulty)
    before = obsdeco.stats().internal_faults

    def contents() -> list[str | None]:
        stream = openai_client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True
        )
        return [chunk.choices[0].delta.content for chunk in stream if chunk.choices]

    observed = contents()
    obsdeco.unpatch_all()
    assert observed == contents()
    assert len(observed) > 2
    assert obsdeco.stats().internal_faults > before


def test_a_storage_fault_is_counted_not_raised(monkeypatch, patched, provider, openai_client):
    from obsdeco.storage import SQLAlchemyStorage

    before = obsdeco.stats().dropped_rejected
    monkeypatch.setattr(SQLAlchemyStorage, "write", _faulty)

    response = openai_client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    assert response.choices
    obsdeco.flush(timeout=10)
    assert obsdeco.stats().dropped_rejected > before


def test_a_fault_in_session_bookkeeping_does_not_break_the_function(monkeypatch, caplog):
    monkeypatch.setattr("obsdeco.guard.faults._places", set())
    monkeypatch.setattr(obsdeco.MetricsCollector, "start_session", _faulty)

    @obsdeco.observe_session
    def handle(value: int) -> int:
        return value * 2

    with caplog.at_level(logging.ERROR, logger="obsdeco"):
        assert handle(21) == 42
    assert "injected obsdeco fault" in caplog.text


def test_nothing_is_recorded_before_patch_all(provider, openai_client, sqlite_url):
    obsdeco.configure(database_url=sqlite_url)
    openai_client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    obsdeco.flush()
    assert count_rows(sqlite_url, "llm_calls") == 0


LAZY = textwrap.dedent(
    """
    import sys
    import obsdeco
    from obsdeco.integrations import seam

    names = obsdeco.patch_all()
    print("google-genai" in names, "dspy" in names)
    print("google.genai" in sys.modules, "dspy" in sys.modules)
    import google.genai
    print(seam.installed("google.genai._api_client.BaseApiClient.request"))
    """
)


def test_patch_all_patches_heavy_libraries_when_they_are_imported_not_before():
    result = subprocess.run(
        [sys.executable, "-c", LAZY], capture_output=True, text=True, timeout=120, check=False
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["True True", "False False", "True"]
