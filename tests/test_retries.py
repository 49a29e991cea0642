"""Retries the SDKs make inside one call: counted on the call, visible in reports."""

from __future__ import annotations

import anthropic
import openai
import pytest

import obsdeco
from obsdeco.testing import Reply

MESSAGES = [{"role": "user", "content": "hello"}]
RATE_LIMITED = Reply.error(429, headers={"retry-after-ms": "1"})


@pytest.fixture
def retrying_openai(provider):
    with openai.OpenAI(
        base_url=provider.openai_base_url, api_key="sk-test", max_retries=2
    ) as client:
        yield client


def _one_call(session_id: str) -> obsdeco.LLMCall:
    [call] = obsdeco.get_calls(session_id)
    return call


def test_a_call_retried_after_a_rate_limit_is_one_successful_call_with_its_retries(
    patched, provider, retrying_openai
):
    provider.enqueue(RATE_LIMITED)

    with obsdeco.Observatory("retries").track() as session:
        retrying_openai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    call = _one_call(session.id)
    assert call.success is True
    assert (call.retries, call.rate_limited_retries) == (1, 1)
    assert len(provider.requests) == 2
    report = obsdeco.get_report(session.id)
    assert (report.quality.retries, report.quality.rate_limited_retries) == (1, 1)
    assert "SDK retries" in str(report)


async def test_async_retries_after_server_errors_are_not_rate_limits(patched, provider):
    provider.enqueue(Reply.error(529, headers={"retry-after-ms": "1"}))
    provider.enqueue(Reply.error(500, headers={"retry-after-ms": "1"}))

    async with anthropic.AsyncAnthropic(
        base_url=provider.anthropic_base_url, api_key="sk-ant-test", max_retries=2
    ) as client:
        with obsdeco.Observatory("retries").track() as session:
            await client.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=MESSAGES)

    call = _one_call(session.id)
    assert (call.success, call.retries, call.rate_limited_retries) == (True, 2, 0)


def test_rate_limits_recovered_by_retries_still_raise_the_suggestion(
    configured, patched, provider, retrying_openai
):
    with obsdeco.Observatory("retries").track() as session:
        for _ in range(4):
            provider.enqueue(RATE_LIMITED)
            retrying_openai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    report = obsdeco.get_report(session.id)
    [tip] = [s for s in report.suggestions if s.kind == "rate_limits"]
    assert "4 of 4 calls to openai gpt-4o-mini hit a rate limit (0 failed" in tip.message
    project = obsdeco.report("retries")
    assert [s.message for s in project.suggestions if s.kind == "rate_limits"] == [tip.message]
    assert project.quality.rate_limited_retries == 4


def test_without_patching_retries_are_left_alone(provider, retrying_openai):
    original = openai._base_client.SyncAPIClient.__dict__["_sleep_for_retry"]
    obsdeco.patch_all()
    assert openai._base_client.SyncAPIClient.__dict__["_sleep_for_retry"] is not original
    obsdeco.unpatch_all()

    assert openai._base_client.SyncAPIClient.__dict__["_sleep_for_retry"] is original
    provider.enqueue(RATE_LIMITED)
    retrying_openai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert len(provider.requests) == 2
