"""dspy, both engines, over real HTTP to the local provider, inside decorated sessions and agents.

dspy's default engine is its vendored lm15 client, which has an HTTP/1.1 stack of its own:
obsdeco observes it at lm15's request methods (obsdeco/integrations/dspy.py). With
`engine="litellm"`, litellm posts OpenAI requests through the openai SDK (the SDK seam) and
Anthropic requests through its own httpx client (the HTTP transport seam).

Every LM here has dspy's response cache off (`cache=False`), so that each call really goes
out, and dspy's retries off (`num_retries=0`), so that one call is one request. The local
provider's usage is deterministic: the prompt tokens count the request's text
(`count_request_tokens`: "What is the capital of France?" is 7), the completion tokens the
answer's (ANSWER, in the shape dspy's ChatAdapter parses, is 19).
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

import obsdeco
from obsdeco import LLMCall, ModelProvider
from obsdeco.testing import (
    ProviderServer,
    RecordedRequest,
    Reply,
    count_request_tokens,
    count_tokens,
)
from tests.helpers import call_facts

# Neither dspy (its model metadata) nor litellm (its price map) may fetch from the network.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
dspy = pytest.importorskip("dspy", reason="dspy is not installed (the frameworks extra)")
lm15 = pytest.importorskip("dspy.lm15", reason="this dspy has no lm15 engine")

QUESTION = "What is the capital of France?"
QUESTION_TOKENS = 7
ANSWER = "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"
ANSWER_TOKENS = 19
AGENT = ("Geographer", "answer")


def test_the_expected_counts_are_the_providers_own() -> None:
    assert count_tokens(QUESTION) == QUESTION_TOKENS
    assert count_tokens(ANSWER) == ANSWER_TOKENS


@dataclass(frozen=True)
class Target:
    """A model dspy calls, where the local provider serves it, and how its record reads."""

    model: str
    provider: ModelProvider
    api: str
    base_url: Callable[[ProviderServer], str]
    details: tuple[int | None, int | None, int | None]
    """(cached, cache_creation, reasoning) as the provider's usage reports them."""

    @property
    def wire_model(self) -> str:
        return self.model.split("/", 1)[1]

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.api == "chat.completions" else "/v1/messages"


OPENAI = Target(
    "openai/gpt-4o-mini",
    ModelProvider.OPENAI,
    "chat.completions",
    lambda provider: provider.openai_base_url,
    (0, None, 0),  # the chat usage details: cached 0, reasoning 0, no cache-write count
)
ANTHROPIC = Target(
    "anthropic/claude-sonnet-4-5",
    ModelProvider.ANTHROPIC,
    "messages",
    lambda provider: f"{provider.base_url}/v1",
    (0, 0, None),  # cache read 0, cache write 0, no thinking count
)
TARGETS = [pytest.param(OPENAI, id="openai"), pytest.param(ANTHROPIC, id="anthropic")]


@pytest.fixture
def answering(provider: ProviderServer) -> ProviderServer:
    """The local provider answering every request with ANSWER."""
    provider.default_reply = Reply.default(text=ANSWER)
    return provider


@pytest.fixture
async def make_lm(answering: ProviderServer) -> AsyncIterator[Callable[..., Any]]:
    """Builds `dspy.LM`s pointed at the local provider; their pools are closed afterwards."""
    made: list[Any] = []

    def make(target: Target, **kwargs: Any) -> Any:
        settings = {"api_base": target.base_url(answering), **kwargs}
        lm = dspy.LM(target.model, api_key="sk-test", cache=False, num_retries=0, **settings)
        made.append(lm)
        return lm

    yield make
    for lm in made:
        await lm.aclose()


def summary(call: LLMCall) -> dict[str, Any]:
    return call_facts(call)


def answered(target: Target, request: RecordedRequest, *, streamed: bool = False) -> dict[str, Any]:
    """The record of a successful call whose request the provider received as `request`."""
    cached, cache_creation, reasoning = target.details
    return {
        "provider": target.provider,
        "api": target.api,
        "model": target.wire_model,
        "response_model": target.wire_model,
        "prompt_tokens": count_request_tokens(request.body),
        "completion_tokens": ANSWER_TOKENS,
        "cached_tokens": cached,
        "cache_creation_tokens": cache_creation,
        "reasoning_tokens": reasoning,
        "streamed": streamed,
        "success": True,
        "error_type": None,
    }


def failed(target: Target, error_type: str, *, streamed: bool = False) -> dict[str, Any]:
    return {
        "provider": target.provider,
        "api": target.api,
        "model": target.wire_model,
        "response_model": None,
        "prompt_tokens": None,
        "completion_tokens": None,
        "cached_tokens": None,
        "cache_creation_tokens": None,
        "reasoning_tokens": None,
        "streamed": streamed,
        "success": False,
        "error_type": error_type,
    }


def in_agent(run: Callable[[], Any]) -> tuple[Any, list[LLMCall]]:
    """`run()` by AGENT inside a session; its value (or the exception raised) and the session's
    records, each checked to be attributed to that session and agent."""
    box: dict[str, str] = {}

    @obsdeco.observe_agent(name=AGENT[0], operation=AGENT[1])
    def agent() -> Any:
        return run()

    @obsdeco.observe_session(name="dspy")
    def session() -> Any:
        box["id"] = obsdeco.current_session().id
        try:
            return agent()
        except Exception as error:
            return error

    return session(), _records(box["id"])


async def in_async_agent(run: Callable[[], Any]) -> tuple[Any, list[LLMCall]]:
    """The async twin of `in_agent`."""
    box: dict[str, str] = {}

    @obsdeco.observe_agent(name=AGENT[0], operation=AGENT[1])
    async def agent() -> Any:
        return await run()

    @obsdeco.observe_session(name="dspy")
    async def session() -> Any:
        box["id"] = obsdeco.current_session().id
        try:
            return await agent()
        except Exception as error:
            return error

    return await session(), _records(box["id"])


def _records(session_id: str) -> list[LLMCall]:
    obsdeco.flush()
    calls = obsdeco.get_calls(session_id)
    for call in calls:
        assert (call.session_id, call.agent_name, call.operation) == (session_id, *AGENT)
    return calls


def predict(lm: Any) -> Callable[[], Any]:
    def run() -> Any:
        with dspy.context(lm=lm):
            return dspy.Predict("question -> answer")(question=QUESTION)

    return run


def streamed_predict(lm: Any, *, is_async_program: bool) -> Callable[[], Any]:
    """`dspy.streamify(Predict)` read to its end: (chunks, prediction). A sync program runs in
    a worker thread and streams through lm15's sync client; an async one through the async."""

    async def run() -> tuple[list[Any], Any]:
        program = dspy.streamify(
            dspy.Predict("question -> answer"), is_async_program=is_async_program
        )
        with dspy.context(lm=lm):
            values = [value async for value in program(question=QUESTION)]
        return values[:-1], values[-1]

    return run


# --- the default engine (lm15) ----------------------------------------------------------------


def test_patch_all_names_dspy(patched):
    assert "dspy" in patched


@pytest.mark.parametrize("target", TARGETS)
def test_a_direct_call_is_recorded_once_with_exact_tokens(target, answering, make_lm, patched):
    lm = make_lm(target)

    value, calls = in_agent(lambda: lm(QUESTION))

    assert value == [ANSWER]
    request = answering.last_request
    assert request.path == target.path
    assert count_request_tokens(request.body) == QUESTION_TOKENS
    assert [summary(call) for call in calls] == [answered(target, request)]
    assert calls[0].latency_ms > 0
    assert calls[0].time_to_first_token_ms is None


@pytest.mark.parametrize("target", TARGETS)
async def test_an_async_call_is_recorded_once_with_exact_tokens(
    target, answering, make_lm, patched
):
    lm = make_lm(target)

    value, calls = await in_async_agent(lambda: lm.acall(QUESTION))

    assert value == [ANSWER]
    assert [summary(call) for call in calls] == [answered(target, answering.last_request)]
    assert calls[0].prompt_tokens == QUESTION_TOKENS


@pytest.mark.parametrize("target", TARGETS)
def test_each_call_goes_out_and_is_recorded(target, answering, make_lm, patched):
    lm = make_lm(target)

    _, calls = in_agent(lambda: [lm(QUESTION), lm(QUESTION)])

    assert len(answering.requests) == 2  # the cache is off: the repeat went out too
    assert [summary(call) for call in calls] == [
        answered(target, request) for request in answering.requests
    ]


@pytest.mark.parametrize("target", TARGETS)
def test_a_predict_is_recorded_with_the_prompt_dspy_built(target, answering, make_lm, patched):
    lm = make_lm(target)

    prediction, calls = in_agent(predict(lm))

    assert prediction.answer == "Paris"
    request = answering.last_request
    assert count_request_tokens(request.body) > QUESTION_TOKENS  # dspy's instructions too
    assert [summary(call) for call in calls] == [answered(target, request)]


@pytest.mark.parametrize("target", TARGETS)
async def test_an_async_predict_is_recorded(target, answering, make_lm, patched):
    lm = make_lm(target)

    async def run() -> Any:
        with dspy.context(lm=lm):
            return await dspy.Predict("question -> answer").acall(question=QUESTION)

    prediction, calls = await in_async_agent(run)

    assert prediction.answer == "Paris"
    assert [summary(call) for call in calls] == [answered(target, answering.last_request)]


@pytest.mark.parametrize("is_async_program", [False, True], ids=["sync-client", "async-client"])
@pytest.mark.parametrize("target", TARGETS)
async def test_a_streamed_predict_is_recorded_once_with_exact_tokens_and_ttft(
    target, is_async_program, answering, make_lm, patched
):
    lm = make_lm(target)

    (chunks, prediction), calls = await in_async_agent(
        streamed_predict(lm, is_async_program=is_async_program)
    )

    assert prediction.answer == "Paris"
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == ANSWER
    request = answering.last_request
    assert request.body["stream"] is True
    assert [summary(call) for call in calls] == [answered(target, request, streamed=True)]
    call = calls[0]
    assert call.time_to_first_token_ms is not None
    assert 0 < call.time_to_first_token_ms <= call.latency_ms


async def test_the_responses_api_is_recorded_plain_and_streamed(answering, make_lm, patched):
    lm = make_lm(OPENAI, model_type="responses")

    async def run() -> Any:
        value = lm(QUESTION)
        _, prediction = await streamed_predict(lm, is_async_program=True)()
        return value, prediction.answer

    (value, answer), calls = await in_async_agent(run)

    assert (value, answer) == ([{"text": ANSWER}], "Paris")
    plain, streamed = answering.requests
    assert (plain.path, streamed.path) == ("/v1/responses", "/v1/responses")
    assert [summary(call) for call in calls] == [
        {**answered(OPENAI, plain), "api": "responses"},
        {**answered(OPENAI, streamed, streamed=True), "api": "responses"},
    ]


@pytest.mark.parametrize("target", TARGETS)
async def test_dspy_sees_the_same_answers_with_and_without_obsdeco(target, answering, make_lm):
    lm = make_lm(target)

    def outputs() -> Any:
        return lm(QUESTION), predict(lm)().answer

    async def streamed() -> Any:
        chunks, prediction = await streamed_predict(lm, is_async_program=True)()
        return [dict(chunk.choices[0].delta) for chunk in chunks], prediction.answer

    baseline = outputs(), await lm.acall(QUESTION), await streamed()
    obsdeco.patch_all()
    try:
        observed = outputs(), await lm.acall(QUESTION), await streamed()
    finally:
        obsdeco.unpatch_all()

    assert observed == baseline


FAILURES = [
    # the reply, dspy's exception, the error type recorded, what its message says
    pytest.param(Reply.error(429), "LMRateLimitError", "rate_limit", "HTTP 429", id="429"),
    pytest.param(Reply.error(400), "LMInvalidRequestError", "bad_request", "HTTP 400", id="400"),
    pytest.param(
        Reply.disconnect(),
        "LMTransportError",
        "connection",
        "server closed connection before sending response",
        id="disconnect",
    ),
]


@pytest.mark.parametrize(("reply", "exception", "error_type", "message"), FAILURES)
@pytest.mark.parametrize("target", TARGETS)
async def test_a_failing_call_raises_dspys_error_unchanged_and_is_recorded_once(
    target, reply, exception, error_type, message, answering, make_lm
):
    lm = make_lm(target)
    answering.enqueue(reply, reply, reply)
    baseline = in_agent(lambda: lm(QUESTION))[0]
    obsdeco.patch_all()
    try:
        error, calls = in_agent(lambda: lm(QUESTION))
        async_error, async_calls = await in_async_agent(lambda: lm.acall(QUESTION))
    finally:
        obsdeco.unpatch_all()

    assert type(error).__name__ == type(async_error).__name__ == exception
    assert (type(error), str(error)) == (type(baseline), str(baseline))
    assert [summary(call) for call in calls + async_calls] == [failed(target, error_type)] * 2
    assert all(message in call.error_message for call in calls + async_calls)


@pytest.mark.parametrize(("reply", "exception", "error_type", "message"), FAILURES)
@pytest.mark.parametrize("target", TARGETS)
async def test_a_failing_stream_raises_dspys_error_and_is_recorded_once(
    target, reply, exception, error_type, message, answering, make_lm, patched
):
    lm = make_lm(target)
    answering.enqueue(reply)

    error, calls = await in_async_agent(streamed_predict(lm, is_async_program=True))

    assert type(error).__name__ == exception
    assert [summary(call) for call in calls] == [failed(target, error_type, streamed=True)]
    assert message in calls[0].error_message


# --- lm15's streams, read part of the way -------------------------------------------------------


def lm15_chat(provider: ProviderServer) -> Any:
    router = lm15.LMRouter(
        lm15.RouterConfig(
            api_keys={"openai-chat": "sk-test"},
            base_urls={"openai-chat": provider.openai_base_url},
            env={},
        )
    )
    return router, router.lm("openai-chat:gpt-4o-mini")


def lm15_request() -> Any:
    return lm15.Request(model="gpt-4o-mini", messages=(lm15.Message.user(QUESTION),))


@pytest.mark.parametrize("how", ["closed", "dropped"])
def test_a_stream_left_early_is_recorded_once_with_what_was_seen(how, answering, patched):
    router, chat = lm15_chat(answering)

    def read_three() -> list[Any]:
        events = chat.stream(lm15_request())
        seen = [next(events) for _ in range(3)]
        if how == "closed":
            events.close()
        else:
            del events
            gc.collect()
        return seen

    seen, calls = in_agent(read_three)
    router.close()

    assert [event.type for event in seen] == ["start", "delta", "delta"]
    # The usage chunk had not arrived: tokens unknown, never invented.
    assert [(call.streamed, call.success, call.prompt_tokens) for call in calls] == [
        (True, True, None)
    ]
    assert calls[0].time_to_first_token_ms is not None


async def test_an_async_stream_closed_early_is_recorded_once_with_what_was_seen(answering, patched):
    router = lm15.AsyncLMRouter(
        lm15.RouterConfig(
            api_keys={"openai-chat": "sk-test"},
            base_urls={"openai-chat": answering.openai_base_url},
            env={},
        )
    )
    chat = router.lm("openai-chat:gpt-4o-mini")

    async def read_three() -> list[Any]:
        events = chat.stream(lm15_request())
        seen = [await anext(events) for _ in range(3)]
        await events.aclose()
        return seen

    seen, calls = await in_async_agent(read_three)
    await router.aclose()

    assert [event.type for event in seen] == ["start", "delta", "delta"]
    assert [(call.streamed, call.success, call.prompt_tokens) for call in calls] == [
        (True, True, None)
    ]


def test_a_request_that_is_not_an_llm_call_is_not_recorded(answering, patched):
    router, chat = lm15_chat(answering)

    error, calls = in_agent(chat.list_models)  # GET /v1/models: the provider has none
    router.close()

    assert answering.last_request.path == "/v1/models"
    assert type(error).__name__ == "InvalidRequestError"
    assert calls == []


# --- guarded like the SDK patches -----------------------------------------------------------


def test_a_renamed_target_disables_only_its_own_patch(monkeypatch, caplog, answering, make_lm):
    from dspy._vendor.lm15.providers import async_base

    monkeypatch.delattr(async_base.AsyncBaseProviderLM, "_send")
    with caplog.at_level(logging.WARNING, logger="obsdeco"):
        names = obsdeco.patch_all()
    try:
        lm = make_lm(OPENAI)
        _, calls = in_agent(lambda: lm(QUESTION))
    finally:
        obsdeco.unpatch_all()

    assert "dspy" in names
    assert "AsyncBaseProviderLM._send" in caplog.text
    assert [summary(call) for call in calls] == [answered(OPENAI, answering.last_request)]


# --- engine="litellm" ---------------------------------------------------------------------


@pytest.fixture
def litellm() -> Any:
    return pytest.importorskip("litellm", reason="litellm is not installed (the frameworks extra)")


async def test_litellm_engine_on_openai_goes_through_the_openai_sdk_seam(
    litellm, answering, make_lm, patched
):
    lm = make_lm(OPENAI, engine="litellm")

    async def run() -> Any:
        return lm(QUESTION), await lm.acall(QUESTION)

    values, calls = await in_async_agent(run)

    assert values == ([ANSWER], [ANSWER])
    assert [summary(call) for call in calls] == [
        answered(OPENAI, request) for request in answering.requests
    ]


async def test_litellm_engine_on_openai_streamed(litellm, answering, make_lm, patched):
    lm = make_lm(OPENAI, engine="litellm")

    (chunks, prediction), calls = await in_async_agent(streamed_predict(lm, is_async_program=True))

    assert prediction.answer == "Paris"
    assert chunks
    # litellm does not ask for the stream's usage, so its tokens are unknown.
    assert [(call.api, call.streamed, call.success, call.prompt_tokens) for call in calls] == [
        ("chat.completions", True, True, None)
    ]


async def test_litellm_engine_on_openai_failing(litellm, answering, make_lm, patched):
    lm = make_lm(OPENAI, engine="litellm")
    answering.enqueue(Reply.error(400))

    error, calls = in_agent(lambda: lm(QUESTION))

    assert type(error).__name__ == "LMInvalidRequestError"
    assert [summary(call) for call in calls] == [failed(OPENAI, "bad_request")]


async def test_litellm_engine_on_anthropic_is_recorded_by_the_http_seam(
    litellm, answering, make_lm, patched
):
    """litellm posts Anthropic requests with its own httpx client, not the anthropic SDK: only
    the HTTP transport seam (httpx / httpx2 `Client.send`) sees them."""
    # litellm adds /v1/messages to the base URL itself
    lm = make_lm(ANTHROPIC, engine="litellm", api_base=answering.base_url)

    async def run() -> Any:
        return lm(QUESTION), await lm.acall(QUESTION)

    values, calls = await in_async_agent(run)

    assert values == ([ANSWER], [ANSWER])
    requests = answering.requests
    assert [request.path for request in requests] == ["/v1/messages", "/v1/messages"]
    assert all(count_request_tokens(request.body) == QUESTION_TOKENS for request in requests)
    assert [summary(call) for call in calls] == [
        answered(ANTHROPIC, request) for request in requests
    ]
