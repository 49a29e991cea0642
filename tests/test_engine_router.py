"""The model router (`configure(routes=[obsdeco.Route(...)])`, API.md section 6) with the real
SDKs over HTTP to the local provider.

The provider's synthesised replies name the model they were asked for, so both what it
received (`provider.requests`) and what the user got show where a call went. Every test asks
with a word of its own (`nonce`): "Say hello <nonce>" is 27 characters, which the router
estimates at 7 prompt tokens (4 characters a token) and the provider counts as 3.
"""

from __future__ import annotations

import logging
import os
import types
from collections.abc import Callable, Mapping
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from pydantic import ValidationError

import obsdeco
from obsdeco.testing import Reply
from tests.engine_helpers import (
    COMPLETION_TOKENS,
    PROMPT_TOKENS,
    calls_in,
    messages,
    new_nonce,
    prompt,
    tracked,
)
from tests.helpers import call, drain, entered

pytestmark = pytest.mark.usefixtures("patched")

ESTIMATED_PROMPT_TOKENS = 7
"""The router's estimate for `prompt(nonce)`: ceil(27 characters / 4)."""
SERVER_ERROR = Reply.error(500, message="the model is overloaded")

Configure = Callable[..., None]


@pytest.fixture
def nonce() -> str:
    return new_nonce()


@pytest.fixture
def routes(tmp_path: os.PathLike[str]) -> Configure:
    """Configure obsdeco (records on a SQLite file of the test's own) with these rules."""

    def configure(*rules: obsdeco.Route) -> None:
        obsdeco.configure(database_url=f"sqlite:///{tmp_path}/default.db", routes=rules)

    return configure


@pytest.fixture(params=["sync", "async"])
def anthropic_any(
    request: pytest.FixtureRequest,
    anthropic_client: anthropic.Anthropic,
    async_anthropic_client: anthropic.AsyncAnthropic,
) -> anthropic.Anthropic | anthropic.AsyncAnthropic:
    return anthropic_client if request.param == "sync" else async_anthropic_client


def chat_kwargs(nonce: str, model: str = "gpt-4o", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": messages(nonce), **extra}


def routing(record: obsdeco.LLMCall) -> tuple[str, str | None, str | None, str | None]:
    """(model, requested_model, routed_from, shadow_model) of a record."""
    return record.model, record.requested_model, record.routed_from, record.shadow_model


MINI = obsdeco.Route(from_model="gpt-4o", to_model="gpt-4o-mini")
ROUTED = ("gpt-4o-mini", "gpt-4o", "gpt-4o", None)
UNROUTED = ("gpt-4o", None, None, None)


# ------------------------------------------------------------------------------------------
# 1. A matching request goes to the rule's model, on every endpoint
# ------------------------------------------------------------------------------------------


async def test_a_chat_completion_is_sent_to_the_routed_model(provider, client, routes, nonce):
    routes(MINI)
    with tracked() as session:
        completion = await call(client.chat.completions.create, **chat_kwargs(nonce))

    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content == provider.default_text
    assert provider.last_request.body == chat_kwargs(nonce, "gpt-4o-mini")
    [record] = calls_in(session)
    assert routing(record) == ROUTED
    assert (record.prompt_tokens, record.completion_tokens, record.success) == (
        PROMPT_TOKENS,
        COMPLETION_TOKENS,
        True,
    )


async def test_a_chat_stream_is_sent_to_the_routed_model(provider, client, routes, nonce):
    routes(MINI)
    kwargs = chat_kwargs(nonce, stream=True, stream_options={"include_usage": True})
    with tracked() as session:
        chunks = await drain(await call(client.chat.completions.create, **kwargs))

    assert {chunk.model for chunk in chunks} == {"gpt-4o-mini"}
    assert provider.last_request.body == {**kwargs, "model": "gpt-4o-mini"}
    [record] = calls_in(session)
    assert routing(record) == ROUTED
    assert (record.streamed, record.prompt_tokens, record.completion_tokens) == (
        True,
        PROMPT_TOKENS,
        COMPLETION_TOKENS,
    )


async def test_the_chat_stream_helper_and_raw_responses_are_routed(provider, client, routes, nonce):
    routes(MINI)
    with tracked() as session:
        async with entered(client.chat.completions.stream(**chat_kwargs(nonce))) as stream:
            await drain(stream)
            final = await call(stream.get_final_completion)
        raw = await call(client.chat.completions.with_raw_response.create, **chat_kwargs(nonce))
        parsed = await call(raw.parse)

    assert (final.model, parsed.model) == ("gpt-4o-mini", "gpt-4o-mini")
    assert [request.body["model"] for request in provider.requests] == ["gpt-4o-mini"] * 2
    assert [routing(record) for record in calls_in(session)] == [ROUTED, ROUTED]


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
async def test_a_responses_call_is_routed(provider, client, routes, nonce, streamed):
    routes(obsdeco.Route(from_model="gpt-4.1", to_model="gpt-4.1-nano"))
    kwargs = {"model": "gpt-4.1", "input": prompt(nonce), "stream": streamed}
    with tracked() as session:
        result = await call(client.responses.create, **kwargs)
        if streamed:
            result = (await drain(result))[-1].response

    assert result.model == "gpt-4.1-nano"
    assert provider.last_request.body == {**kwargs, "model": "gpt-4.1-nano"}
    [record] = calls_in(session)
    assert routing(record) == ("gpt-4.1-nano", "gpt-4.1", "gpt-4.1", None)
    assert (record.streamed, record.prompt_tokens) == (streamed, PROMPT_TOKENS)


async def test_an_embeddings_call_is_routed(provider, client, routes, nonce):
    routes(obsdeco.Route(from_model="text-embedding-3-large", to_model="text-embedding-3-small"))
    with tracked() as session:
        result = await call(
            client.embeddings.create, model="text-embedding-3-large", input=prompt(nonce)
        )

    assert result.model == "text-embedding-3-small"
    assert provider.last_request.body["model"] == "text-embedding-3-small"
    [record] = calls_in(session)
    assert routing(record) == (
        "text-embedding-3-small",
        "text-embedding-3-large",
        "text-embedding-3-large",
        None,
    )


SONNET_TO_HAIKU = obsdeco.Route(from_model="claude-sonnet-4-5", to_model="claude-haiku-4-5")
ANTHROPIC_ROUTED = ("claude-haiku-4-5", "claude-sonnet-4-5", "claude-sonnet-4-5", None)


async def test_anthropic_messages_and_the_stream_helper_are_routed(
    provider, anthropic_any, routes, nonce
):
    routes(SONNET_TO_HAIKU)
    kwargs = {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": messages(nonce)}
    with tracked() as session:
        message = await call(anthropic_any.messages.create, **kwargs)
        async with entered(anthropic_any.messages.stream(**kwargs)) as stream:
            text = "".join(await drain(stream.text_stream))
            final = await call(stream.get_final_message)

    assert (message.model, final.model) == ("claude-haiku-4-5", "claude-haiku-4-5")
    assert text == provider.default_text
    assert [request.body for request in provider.requests] == [
        {**kwargs, "model": "claude-haiku-4-5"},
        {**kwargs, "model": "claude-haiku-4-5", "stream": True},
    ]
    records = calls_in(session)
    assert [routing(record) for record in records] == [ANTHROPIC_ROUTED] * 2
    assert [record.streamed for record in records] == [False, True]


LIBRARIES = [pytest.param(httpx, id="httpx"), pytest.param(httpx2, id="httpx2")]


@pytest.fixture(params=LIBRARIES)
def lib(request: pytest.FixtureRequest) -> types.ModuleType:
    return request.param  # type: ignore[no-any-return]


def test_a_raw_openai_post_is_routed(provider, lib, routes, nonce):
    routes(MINI)
    with lib.Client() as http, tracked() as session:
        response = http.post(
            f"{provider.openai_base_url}/chat/completions", json=chat_kwargs(nonce)
        )

    assert response.json()["model"] == "gpt-4o-mini"
    assert provider.last_request.body == chat_kwargs(nonce, "gpt-4o-mini")
    assert [routing(record) for record in calls_in(session)] == [ROUTED]


PRO_TO_FLASH = obsdeco.Route(from_model="gemini-2.5-pro", to_model="gemini-2.5-flash")
GEMINI_ROUTED = ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-pro", None)


@pytest.mark.parametrize(
    ("method", "query"),
    [("generateContent", ""), ("streamGenerateContent", "?alt=sse")],
    ids=["plain", "stream"],
)
def test_a_raw_gemini_post_is_routed_by_its_path(provider, lib, routes, nonce, method, query):
    routes(PRO_TO_FLASH)
    body = {"contents": [{"role": "user", "parts": [{"text": prompt(nonce)}]}]}
    url = f"{provider.gemini_base_url}/v1beta/models/gemini-2.5-pro:{method}{query}"
    headers = {"x-goog-api-key": "k"}
    with (
        lib.Client() as http,
        tracked() as session,
        http.stream("POST", url, json=body, headers=headers) as response,
    ):
        text = response.read().decode()

    assert response.status_code == 200
    assert '"modelVersion":"gemini-2.5-flash"' in text.replace(" ", "")
    request = provider.last_request
    assert request.path == f"/v1beta/models/gemini-2.5-flash:{method}"
    assert dict(request.query) == ({"alt": "sse"} if query else {})
    assert request.body == body
    [record] = calls_in(session)
    assert routing(record) == GEMINI_ROUTED
    assert (record.streamed, record.prompt_tokens) == (bool(query), PROMPT_TOKENS)


def test_google_genai_is_routed(provider, routes, nonce):
    genai = pytest.importorskip("google.genai", reason="google-genai is not installed")
    routes(PRO_TO_FLASH)
    client = genai.Client(
        api_key="k", http_options=genai.types.HttpOptions(base_url=provider.gemini_base_url)
    )
    with tracked() as session:
        response = client.models.generate_content(model="gemini-2.5-pro", contents=prompt(nonce))

    assert response.text == provider.default_text
    assert provider.last_request.path.endswith("/models/gemini-2.5-flash:generateContent")
    assert [routing(record) for record in calls_in(session)] == [GEMINI_ROUTED]


# ------------------------------------------------------------------------------------------
# 2. Requests the rule does not match go as they are
# ------------------------------------------------------------------------------------------

TOOLS = [
    {
        "type": "function",
        "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}},
    }
]

CONDITIONS = [
    # rule options, extra request arguments, routed?
    pytest.param({"max_prompt_tokens": ESTIMATED_PROMPT_TOKENS}, {}, True, id="prompt-at-limit"),
    pytest.param(
        {"max_prompt_tokens": ESTIMATED_PROMPT_TOKENS - 1}, {}, False, id="prompt-too-long"
    ),
    pytest.param({"tools": False}, {}, True, id="no-tools-wanted-none-given"),
    pytest.param({"tools": False}, {"tools": TOOLS}, False, id="no-tools-wanted-tools-given"),
    pytest.param({"tools": True}, {}, False, id="tools-wanted-none-given"),
    pytest.param({"tools": True}, {"tools": TOOLS}, True, id="tools-wanted-tools-given"),
    pytest.param({"when": lambda body: True}, {}, True, id="when-true"),
    pytest.param({"when": lambda body: False}, {}, False, id="when-false"),
    pytest.param(
        {"max_prompt_tokens": 100, "tools": False, "when": lambda body: True},
        {"tools": TOOLS},
        False,
        id="one-condition-fails",
    ),
]


@pytest.mark.parametrize(("options", "extra", "is_routed"), CONDITIONS)
async def test_a_request_is_routed_only_when_every_condition_holds(
    provider, client, routes, nonce, options, extra, is_routed
):
    routes(obsdeco.Route(from_model="gpt-4o", to_model="gpt-4o-mini", **options))
    kwargs = chat_kwargs(nonce, **extra)
    with tracked() as session:
        completion = await call(client.chat.completions.create, **kwargs)

    model = "gpt-4o-mini" if is_routed else "gpt-4o"
    assert completion.model == model
    assert provider.last_request.body == {**kwargs, "model": model}
    assert [routing(record) for record in calls_in(session)] == [ROUTED if is_routed else UNROUTED]


async def test_another_model_is_not_routed(provider, client, routes, nonce):
    routes(MINI)
    with tracked() as session:
        await call(client.chat.completions.create, **chat_kwargs(nonce, "gpt-4.1"))

    assert provider.last_request.body == chat_kwargs(nonce, "gpt-4.1")
    assert [routing(record) for record in calls_in(session)] == [("gpt-4.1", None, None, None)]


async def test_without_rules_nothing_is_routed(provider, client, nonce):
    with tracked() as session:
        await call(client.chat.completions.create, **chat_kwargs(nonce))
    assert provider.last_request.body == chat_kwargs(nonce)
    assert [routing(record) for record in calls_in(session)] == [UNROUTED]


async def test_when_is_told_the_request_body(provider, client, routes, nonce):
    seen: list[Mapping[str, Any]] = []

    def when(body: Mapping[str, Any]) -> bool:
        seen.append(dict(body))
        return body["messages"][0]["content"].endswith(nonce)

    routes(obsdeco.Route(from_model="gpt-4o", to_model="gpt-4o-mini", when=when))
    await call(client.chat.completions.create, **chat_kwargs(nonce, temperature=0))
    await call(client.chat.completions.create, **chat_kwargs(f"{nonce}x"))

    assert seen == [chat_kwargs(nonce, temperature=0), chat_kwargs(f"{nonce}x")]
    assert [request.body["model"] for request in provider.requests] == ["gpt-4o-mini", "gpt-4o"]


async def test_a_when_that_raises_leaves_the_request_as_it_is(provider, client, routes, nonce):
    def when(body: Mapping[str, Any]) -> bool:
        raise KeyError("no such field")

    routes(obsdeco.Route(from_model="gpt-4o", to_model="gpt-4o-mini", when=when))
    faults = obsdeco.stats().internal_faults
    with tracked() as session:
        completion = await call(client.chat.completions.create, **chat_kwargs(nonce))

    assert completion.model == "gpt-4o"
    assert provider.last_request.body == chat_kwargs(nonce)
    assert obsdeco.stats().internal_faults == faults + 1
    assert [routing(record) for record in calls_in(session)] == [UNROUTED]


async def test_the_first_matching_rule_routes(provider, client, routes, nonce):
    routes(
        obsdeco.Route(from_model="gpt-4o", to_model="gpt-4.1-nano", when=lambda body: False),
        obsdeco.Route(from_model="gpt-4o", to_model="gpt-4o-mini"),
        obsdeco.Route(from_model="gpt-4o", to_model="gpt-4.1-mini"),
    )
    await call(client.chat.completions.create, **chat_kwargs(nonce))
    assert provider.last_request.body["model"] == "gpt-4o-mini"


# ------------------------------------------------------------------------------------------
# 3. Shadow mode changes nothing
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
async def test_a_shadow_rule_changes_nothing_and_records_its_model(
    provider, client, routes, nonce, streamed
):
    routes(obsdeco.Route(from_model="gpt-4o", to_model="gpt-4o-mini", shadow=True))
    kwargs = chat_kwargs(nonce, stream=True) if streamed else chat_kwargs(nonce)
    with tracked() as session:
        result = await call(client.chat.completions.create, **kwargs)
        models = {c.model for c in await drain(result)} if streamed else {result.model}

    assert models == {"gpt-4o"}
    assert provider.last_request.body == kwargs
    assert [routing(record) for record in calls_in(session)] == [
        ("gpt-4o", None, None, "gpt-4o-mini")
    ]


# ------------------------------------------------------------------------------------------
# 4. SDK retries are routed too
# ------------------------------------------------------------------------------------------


async def test_each_sdk_retry_of_a_routed_call_is_routed(provider, routes, nonce):
    routes(MINI)
    provider.enqueue(Reply.error(500, headers={"retry-after-ms": "1"}))
    with (
        openai.OpenAI(
            base_url=provider.openai_base_url, api_key="sk-test", max_retries=2
        ) as retrying,
        tracked() as session,
    ):
        completion = retrying.chat.completions.create(**chat_kwargs(nonce))

    assert completion.model == "gpt-4o-mini"
    assert [request.body["model"] for request in provider.requests] == ["gpt-4o-mini"] * 2
    [record] = calls_in(session)
    assert routing(record) == ROUTED
    assert (record.success, record.retries) == (True, 1)


async def test_each_async_anthropic_retry_of_a_routed_call_is_routed(provider, routes, nonce):
    routes(SONNET_TO_HAIKU)
    provider.enqueue(Reply.error(529, headers={"retry-after-ms": "1"}))
    provider.enqueue(Reply.error(429, headers={"retry-after-ms": "1"}))
    async with anthropic.AsyncAnthropic(
        base_url=provider.anthropic_base_url, api_key="sk-ant-test", max_retries=2
    ) as retrying:
        with tracked() as session:
            message = await retrying.messages.create(
                model="claude-sonnet-4-5", max_tokens=64, messages=messages(nonce)
            )

    assert message.model == "claude-haiku-4-5"
    assert [request.body["model"] for request in provider.requests] == ["claude-haiku-4-5"] * 3
    [record] = calls_in(session)
    assert routing(record) == ANTHROPIC_ROUTED
    assert (record.success, record.retries, record.rate_limited_retries) == (True, 2, 1)


# ------------------------------------------------------------------------------------------
# 5. The quality guard
# ------------------------------------------------------------------------------------------


def ask(client: openai.OpenAI, nonce: str) -> bool:
    """One call; whether it succeeded."""
    try:
        client.chat.completions.create(**chat_kwargs(nonce))
    except openai.APIStatusError:
        return False
    return True


def router_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "obsdeco.router" and record.levelno == logging.WARNING
    ]


def test_a_rule_whose_routed_calls_fail_stops_routing(
    provider, openai_client, routes, nonce, caplog
):
    caplog.set_level(logging.WARNING, logger="obsdeco.router")
    routes(obsdeco.Route(from_model="gpt-4o", to_model="gpt-4o-mini", min_quality=0.9))
    provider.enqueue(Reply.default(), SERVER_ERROR)
    stopped = obsdeco.stats().routes_stopped
    with tracked() as session:
        outcomes = [ask(openai_client, nonce) for _ in range(2)]
        assert obsdeco.stats().routes_stopped == stopped + 1
        assert router_warnings(caplog) == [
            "obsdeco route gpt-4o -> gpt-4o-mini stopped routing: the quality of its last 2 "
            "routed calls is 0.500, below its min_quality 0.900; requests for gpt-4o now go "
            "unchanged"
        ]
        provider.enqueue(SERVER_ERROR)
        outcomes += [ask(openai_client, nonce) for _ in range(3)]

    assert outcomes == [True, False, False, True, True]
    assert [request.body["model"] for request in provider.requests] == [
        "gpt-4o-mini",
        "gpt-4o-mini",
        "gpt-4o",
        "gpt-4o",
        "gpt-4o",
    ]
    assert len(router_warnings(caplog)) == 1  # logged once, when it stopped
    assert [routing(record) for record in calls_in(session)] == [ROUTED] * 2 + [UNROUTED] * 3


def test_low_scores_on_routed_calls_stop_a_rule(provider, openai_client, routes, nonce, caplog):
    # Three successful routed calls, quality 1 each; scored 0.2, 0.2 and 0.5 their qualities
    # become those scores: means 0.733, 0.467 (still >= 0.4), then 0.3, when the rule stops.
    caplog.set_level(logging.WARNING, logger="obsdeco.router")
    routes(obsdeco.Route(from_model="gpt-4o", to_model="gpt-4o-mini", min_quality=0.4))
    with tracked() as session:
        assert [ask(openai_client, nonce) for _ in range(3)] == [True] * 3
    routed = calls_in(session)
    for record, value in zip(routed, (0.2, 0.2), strict=False):
        obsdeco.score(record.id, "judge", value)
    assert router_warnings(caplog) == []
    obsdeco.score(routed[2].id, "judge", 0.5)
    [warning] = router_warnings(caplog)
    assert "the quality of its last 3 routed calls is 0.300" in warning
    assert ask(openai_client, nonce) is True
    assert provider.last_request.body["model"] == "gpt-4o"


def test_unrouted_failures_do_not_stop_a_rule(provider, openai_client, routes, nonce, caplog):
    routes(obsdeco.Route(from_model="gpt-4o", to_model="gpt-4o-mini", when=lambda b: b.get("n")))
    provider.enqueue(*[SERVER_ERROR] * 5)
    for _ in range(5):
        with pytest.raises(openai.InternalServerError):
            openai_client.chat.completions.create(**chat_kwargs(nonce))
    openai_client.chat.completions.create(**chat_kwargs(nonce, n=1))

    assert provider.last_request.body["model"] == "gpt-4o-mini"
    assert router_warnings(caplog) == []


def test_the_guard_judges_the_last_20_routed_calls(provider, openai_client, routes, nonce, caplog):
    # 20 successes, then failures. Over the last 20 calls the quality after k failures is
    # (20 - k) / 20: still 0.5 after 10, 0.45 after 11, when the rule stops. Over every call
    # it would have taken 21 failures; over a shorter window, fewer than 11.
    caplog.set_level(logging.WARNING, logger="obsdeco.router")
    routes(obsdeco.Route(from_model="gpt-4o", to_model="gpt-4o-mini", min_quality=0.5))
    provider.enqueue(*[Reply.default()] * 20, *[SERVER_ERROR] * 12)
    outcomes = [ask(openai_client, nonce) for _ in range(32)]

    assert outcomes == [True] * 20 + [False] * 12
    models = [request.body["model"] for request in provider.requests]
    assert models == ["gpt-4o-mini"] * 31 + ["gpt-4o"]
    [warning] = router_warnings(caplog)
    assert "the quality of its last 20 routed calls is 0.450" in warning


def test_new_rules_route_again_after_a_rule_stopped(provider, openai_client, routes, nonce):
    rule = obsdeco.Route(from_model="gpt-4o", to_model="gpt-4o-mini", min_quality=1.0)
    routes(rule)
    provider.enqueue(SERVER_ERROR)
    assert ask(openai_client, nonce) is False
    assert ask(openai_client, nonce) is True
    routes(rule)
    assert ask(openai_client, nonce) is True

    models = [request.body["model"] for request in provider.requests]
    assert models == ["gpt-4o-mini", "gpt-4o", "gpt-4o-mini"]


# ------------------------------------------------------------------------------------------
# 6. Router and cache together: the routed request is what is cached
# ------------------------------------------------------------------------------------------


async def test_the_routed_model_is_part_of_the_cache_key(provider, client, routes, nonce):
    switch = {"on": True}
    routes(obsdeco.Route(from_model="gpt-4o", to_model="gpt-4o-mini", when=lambda b: switch["on"]))
    with tracked() as session, obsdeco.cache():
        routed = await call(client.chat.completions.create, **chat_kwargs(nonce))
        routed_again = await call(client.chat.completions.create, **chat_kwargs(nonce))
        switch["on"] = False
        unrouted = await call(client.chat.completions.create, **chat_kwargs(nonce))
        asked_for_mini = await call(
            client.chat.completions.create, **chat_kwargs(nonce, "gpt-4o-mini")
        )

    assert [request.body["model"] for request in provider.requests] == ["gpt-4o-mini", "gpt-4o"]
    assert routed_again.model_dump() == routed.model_dump()
    assert (unrouted.model, unrouted.id != routed.id) == ("gpt-4o", True)
    assert asked_for_mini.model_dump() == routed.model_dump()  # the same request as sent
    records = calls_in(session)
    assert [(record.cache_hit, *routing(record)) for record in records] == [
        (False, *ROUTED),
        (True, *ROUTED),
        (False, *UNROUTED),
        (True, "gpt-4o-mini", None, None, None),
    ]


async def test_a_routed_stream_is_cached(provider, anthropic_any, routes, nonce):
    routes(SONNET_TO_HAIKU)
    kwargs = {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": messages(nonce)}
    with tracked() as session, obsdeco.cache():
        texts = []
        for _ in range(2):
            async with entered(anthropic_any.messages.stream(**kwargs)) as stream:
                texts.append("".join(await drain(stream.text_stream)))

    assert texts == [provider.default_text] * 2
    assert len(provider.requests) == 1
    records = calls_in(session)
    assert [(record.cache_hit, *routing(record)) for record in records] == [
        (False, *ANTHROPIC_ROUTED),
        (True, *ANTHROPIC_ROUTED),
    ]
    assert [(r.prompt_tokens, r.completion_tokens) for r in records] == [
        (PROMPT_TOKENS, COMPLETION_TOKENS)
    ] * 2


# ------------------------------------------------------------------------------------------
# 7. Rules are checked when made
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"to_model": "gpt-4o"}, "both 'gpt-4o'"),
        ({"when": "short prompts"}, "when"),
        ({"min_quality": 1.5}, "min_quality"),
        ({"min_quality": float("nan")}, "min_quality"),
        ({"max_prompt_tokens": -1}, "max_prompt_tokens"),
        ({"from_model": ""}, "from_model"),
        ({"fallback": "gpt-4o"}, "fallback"),
    ],
)
def test_a_bad_rule_is_refused(options, message):
    with pytest.raises(ValidationError, match=message) as raised:
        obsdeco.Route(**{"from_model": "gpt-4o", "to_model": "gpt-4o-mini", **options})
    assert isinstance(raised.value, ValueError)


def test_a_rule_of_two_models_and_when_alone_is_valid():
    rule = obsdeco.Route(from_model="gpt-4o", to_model="gpt-4o-mini", when=bool)
    assert (rule.max_prompt_tokens, rule.tools, rule.min_quality, rule.shadow) == (
        None,
        None,
        0.9,
        False,
    )


async def test_a_routed_call_saves_the_price_difference(provider, client, routes, nonce):
    routes(obsdeco.Route(from_model="gpt-4o", to_model="gpt-4o-mini"))
    with tracked() as session:
        await call(client.chat.completions.create, **chat_kwargs(nonce))

    [record] = calls_in(session)
    # genai-prices, per million tokens: gpt-4o $2.50 in / $10 out, gpt-4o-mini $0.15 / $0.60.
    paid = (PROMPT_TOKENS * 0.15 + COMPLETION_TOKENS * 0.60) / 1e6
    at_gpt_4o = (PROMPT_TOKENS * 2.50 + COMPLETION_TOKENS * 10.0) / 1e6
    assert record.cost_usd == pytest.approx(paid)
    assert record.saved_usd == pytest.approx(at_gpt_4o - paid)
    report = obsdeco.get_report(session.id)
    assert (report.routing.routed_calls, report.routing.shadow_calls) == (1, 0)
    assert report.routing.saved_usd == pytest.approx(at_gpt_4o - paid)


async def test_a_shadow_rule_counts_what_it_would_have_saved(provider, client, routes, nonce):
    routes(obsdeco.Route(from_model="gpt-4o", to_model="gpt-4o-mini", shadow=True))
    with tracked() as session:
        await call(client.chat.completions.create, **chat_kwargs(nonce))

    [record] = calls_in(session)
    at_gpt_4o = (PROMPT_TOKENS * 2.50 + COMPLETION_TOKENS * 10.0) / 1e6
    at_mini = (PROMPT_TOKENS * 0.15 + COMPLETION_TOKENS * 0.60) / 1e6
    assert (record.cost_usd, record.saved_usd) == (pytest.approx(at_gpt_4o), None)
    report = obsdeco.get_report(session.id)
    assert (report.routing.routed_calls, report.routing.shadow_calls) == (0, 1)
    assert report.routing.saved_usd == 0.0
    assert report.routing.shadow_saved_usd == pytest.approx(at_gpt_4o - at_mini)
