"""Hard budgets with the real OpenAI and Anthropic SDKs against the local provider: refused calls
make no request (the provider's request log), exact refusals, settling to the real cost, races of
threads, asyncio tasks and processes, what is let through, and validation.

Worst case (what a call reserves): its input bounded by the UTF-8 bytes of the JSON of what the
model reads, priced at the higher of the input and cache-write rates, plus `max_tokens` (else the
model's context window) at the output rate. genai-prices: gpt-4o $2.50/M input and cache writes,
$10/M output, a 128,000-token window; claude-haiku-4-5 $1/M input, $1.25/M cache writes, $5/M
output. The provider reports 7 input and 3 output tokens for every call.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import json
import logging
import math
import multiprocessing
import queue
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anthropic
import httpx
import openai
import pytest
import sqlalchemy

import obsdeco
from obsdeco.engine.accounts import DatabaseAccounts
from obsdeco.testing import ProviderServer, Reply
from tests import budget_workers

MESSAGES = budget_workers.MESSAGES
MAX_TOKENS = budget_workers.MAX_TOKENS
INPUT_TOKENS, OUTPUT_TOKENS = 7, 3
REPLY = Reply.default(input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS)
RACERS, ADMITTED = 20, 5
SESSION_BUDGET = "session budget_usd"


def prompt_bytes(messages: list[dict[str, str]]) -> int:
    """The input bound of a request whose only input is `messages`."""
    return len(json.dumps({"messages": messages}, ensure_ascii=False).encode())


def test_the_prompt_bound_counts_utf8_bytes():
    characters = len(json.dumps({"messages": MESSAGES}, ensure_ascii=False))
    assert (characters, prompt_bytes(MESSAGES)) == (61, 64)  # "ü", "ß", "ö": two bytes each


@dataclass(frozen=True)
class Model:
    name: str
    input: float
    worst_input: float
    """USD per million input tokens in the worst case: the higher of input and cache writes."""
    output: float

    def estimate(self, max_tokens: int = MAX_TOKENS, messages: list[Any] = MESSAGES) -> float:
        return (prompt_bytes(messages) * self.worst_input + max_tokens * self.output) / 1e6

    def cost(self) -> float:
        return (INPUT_TOKENS * self.input + OUTPUT_TOKENS * self.output) / 1e6


GPT4O = Model("gpt-4o", input=2.5, worst_input=2.5, output=10.0)
HAIKU = Model("claude-haiku-4-5", input=1.0, worst_input=1.25, output=5.0)


def exactly(value: float) -> Any:
    """`value` up to the rounding of summing floats in another order."""
    return pytest.approx(value, rel=1e-12, abs=0)


@dataclass(frozen=True)
class Caller:
    """One way to make the same LLM call: an SDK, sync or async, plain or streamed."""

    model: Model
    client: Any
    asynchronous: bool
    streamed: bool

    def _create(self) -> Callable[..., Any]:
        if self.model is GPT4O:
            return self.client.chat.completions.create
        return self.client.messages.create

    def _arguments(self, overrides: dict[str, Any]) -> dict[str, Any]:
        arguments = {"model": self.model.name, "messages": MESSAGES, "max_tokens": MAX_TOKENS}
        if self.streamed:
            arguments["stream"] = True
            if self.model is GPT4O:
                arguments["stream_options"] = {"include_usage": True}
        return arguments | overrides

    def send_sync(self, **overrides: Any) -> None:
        result = self._create()(**self._arguments(overrides))
        if self.streamed:
            with result:
                for _ in result:
                    pass

    async def send(self, **overrides: Any) -> None:
        if not self.asynchronous:
            self.send_sync(**overrides)
            return
        result = await self._create()(**self._arguments(overrides))
        if self.streamed:
            async with result:
                async for _ in result:
                    pass


@pytest.fixture
def clients(
    openai_client: openai.OpenAI,
    async_openai_client: openai.AsyncOpenAI,
    anthropic_client: anthropic.Anthropic,
    async_anthropic_client: anthropic.AsyncAnthropic,
) -> dict[tuple[str, bool], Any]:
    """The four clients by (SDK, asynchronous)."""
    return {
        ("openai", False): openai_client,
        ("openai", True): async_openai_client,
        ("anthropic", False): anthropic_client,
        ("anthropic", True): async_anthropic_client,
    }


def make_caller(
    clients: dict[tuple[str, bool], Any], sdk: str, asynchronous: bool, streamed: bool
) -> Caller:
    model = GPT4O if sdk == "openai" else HAIKU
    return Caller(model, clients[sdk, asynchronous], asynchronous, streamed)


CALLERS = [
    (sdk, asynchronous, streamed)
    for sdk in ("openai", "anthropic")
    for asynchronous in (False, True)
    for streamed in (False, True)
]


@pytest.fixture(
    params=CALLERS,
    ids=[
        f"{sdk}-{'async' if asynchronous else 'sync'}-{'stream' if streamed else 'plain'}"
        for sdk, asynchronous, streamed in CALLERS
    ],
)
def caller(
    request: pytest.FixtureRequest,
    patched: list[str],
    provider: ProviderServer,
    clients: dict[tuple[str, bool], Any],
) -> Caller:
    """Each test using it runs with both SDKs, sync and async, plain and streamed."""
    provider.default_reply = REPLY
    return make_caller(clients, *request.param)


def stored_accounts(url: str) -> list[tuple[str, datetime, float, float, float]]:
    """The rows of `budget_accounts`: budget, period, limit, spent, reserved."""
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sqlalchemy.text(
                    "SELECT budget, period, limit_usd, spent_usd, reserved_usd "
                    "FROM budget_accounts ORDER BY budget, period"
                )
            ).all()
    finally:
        engine.dispose()
    return [(row[0], _utc(row[1]), row[2], row[3], row[4]) for row in rows]


def _utc(value: Any) -> datetime:
    """A stored time as an aware UTC datetime (SQLite keeps text, PostgreSQL a timestamp)."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def today() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def agent_name(role: str) -> str:
    """An agent name no other test uses: agent budgets live in the process for its lifetime."""
    return f"{role}-{uuid.uuid4().hex[:8]}"


def refusal_fields(refusal: obsdeco.BudgetExceeded) -> tuple[Any, ...]:
    return (
        refusal.budget,
        refusal.scope,
        refusal.limit_usd,
        refusal.spent_usd,
        refusal.reserved_usd,
        refusal.estimate_usd,
    )


# --- session, project and agent budgets -----------------------------------------------------


async def test_a_session_budget_refuses_the_call_that_could_pass_it_before_sending_it(
    caller, provider, sqlite_url
):
    obsdeco.configure(database_url=sqlite_url)
    model = caller.model
    limit = model.estimate() + model.cost() / 2  # one call fits; after it, its worst case won't
    refusals_before = obsdeco.stats().budget_refusals
    box: dict[str, Any] = {}

    @obsdeco.observe_session(budget_usd=limit)
    async def session() -> None:
        box["id"] = obsdeco.current_session().id
        await caller.send()
        with pytest.raises(obsdeco.BudgetExceeded) as refused:
            await caller.send()
        box["refusal"] = refused.value

    await session()

    assert len(provider.requests) == 1
    refusal = box["refusal"]
    assert refusal_fields(refusal) == (
        SESSION_BUDGET,
        "session",
        limit,
        exactly(model.cost()),
        0.0,
        exactly(model.estimate()),
    )
    assert str(refusal) == (
        f"obsdeco budget 'session budget_usd' would be passed: limit ${limit:.6f}, spent "
        f"${model.cost():.6f}, reserved by calls in flight $0.000000, this call up to "
        f"${model.estimate():.6f}; the call was not sent"
    )
    assert obsdeco.stats().budget_refusals == refusals_before + 1
    obsdeco.flush()
    (call,) = obsdeco.get_calls(box["id"])  # the refused call is not recorded
    assert (call.success, call.prompt_tokens, call.completion_tokens) == (True, 7, 3)


async def test_a_session_budget_holds_the_sessions_nested_in_it(caller, provider, sqlite_url):
    obsdeco.configure(database_url=sqlite_url)
    model = caller.model
    limit = model.estimate() + model.cost() / 2

    @obsdeco.observe_session
    async def inner() -> None:
        await caller.send()

    @obsdeco.observe_session(budget_usd=limit)
    async def outer() -> None:
        await inner()
        with pytest.raises(obsdeco.BudgetExceeded):
            await inner()

    await outer()
    await outer()  # each run of the decorated function is a session with a budget of its own

    assert len(provider.requests) == 2


async def test_a_project_budget_of_a_day_is_shared_through_the_store(
    caller, provider, database_url
):
    model = caller.model
    limit = model.estimate() + 1.5 * model.cost()  # two calls fit, a third's worst case won't
    budget = obsdeco.Budget(limit_usd=limit, scope="project", window="1d", name="daily")
    obsdeco.configure(project="shop", database_url=database_url, budgets=[budget])

    await caller.send()
    assert stored_accounts(database_url) == [
        ("daily | shop", today(), limit, exactly(model.cost()), 0.0)
    ]
    await caller.send()
    # A new configuration (as another process would) finds what the store holds.
    obsdeco.configure(project="shop", database_url=database_url, budgets=[budget])
    with pytest.raises(obsdeco.BudgetExceeded) as refused:
        await caller.send()

    assert len(provider.requests) == 2
    assert refusal_fields(refused.value) == (
        "daily",
        "project",
        limit,
        exactly(2 * model.cost()),
        0.0,
        exactly(model.estimate()),
    )
    assert stored_accounts(database_url) == [
        ("daily | shop", today(), limit, exactly(2 * model.cost()), 0.0)
    ]


def test_a_project_budget_narrowed_to_a_project_leaves_the_others_alone(
    patched, provider, openai_client, sqlite_url
):
    provider.default_reply = REPLY
    budget = obsdeco.Budget(limit_usd=GPT4O.estimate() / 2, scope="project", project="shop")
    obsdeco.configure(project="blog", database_url=sqlite_url, budgets=[budget])
    Caller(GPT4O, openai_client, False, False).send_sync()
    obsdeco.configure(project="shop", database_url=sqlite_url, budgets=[budget])
    with pytest.raises(obsdeco.BudgetExceeded) as refused:
        Caller(GPT4O, openai_client, False, False).send_sync()

    assert len(provider.requests) == 1
    assert refused.value.budget == budget.label == f"project shop ${GPT4O.estimate() / 2:g}"
    assert refused.value.spent_usd == 0.0


async def test_an_agent_budget_narrowed_to_one_agent_holds_its_calls_only(
    caller, provider, sqlite_url
):
    model = caller.model
    limit = model.estimate() + model.cost() / 2
    writer_name = agent_name("Writer")
    budget = obsdeco.Budget(limit_usd=limit, scope="agent", agent=writer_name)
    obsdeco.configure(project="shop", database_url=sqlite_url, budgets=[budget])
    refusals: list[obsdeco.BudgetExceeded] = []

    @obsdeco.observe_agent(writer_name)
    async def writer() -> None:
        try:
            await caller.send()
        except obsdeco.BudgetExceeded as refusal:
            refusals.append(refusal)

    @obsdeco.observe_agent("Reader")
    async def reader() -> None:
        await caller.send()

    @obsdeco.observe_session
    async def session() -> None:
        await writer()
        await writer()
        await reader()
        await reader()
        await caller.send()  # no agent

    await session()
    await session()  # the agent's budget spans sessions

    assert len(provider.requests) == 7
    assert [refusal_fields(refusal) for refusal in refusals] == [
        (
            f"agent {writer_name} ${limit:g}",
            "agent",
            limit,
            exactly(model.cost()),
            0.0,
            exactly(model.estimate()),
        )
    ] * 3


def test_an_agent_budget_gives_each_agent_a_budget_of_its_own(
    patched, provider, openai_client, sqlite_url
):
    provider.default_reply = REPLY
    caller = Caller(GPT4O, openai_client, False, False)
    budget = obsdeco.Budget(
        limit_usd=GPT4O.estimate() + GPT4O.cost() / 2, scope="agent", name="per agent"
    )
    obsdeco.configure(project="shop", database_url=sqlite_url, budgets=[budget])
    outcomes: list[str] = []

    def attempt() -> None:
        try:
            caller.send_sync()
        except obsdeco.BudgetExceeded as refusal:
            outcomes.append(f"refused {refusal.budget}")
        else:
            outcomes.append("sent")

    for name in (agent_name("Planner"), agent_name("Coder")):
        agent = obsdeco.observe_agent(name)(attempt)
        agent()
        agent()
    attempt()  # outside every agent

    assert outcomes == ["sent", "refused per agent", "sent", "refused per agent", "sent"]
    assert len(provider.requests) == 3


def test_every_budget_in_scope_must_admit_the_call(patched, provider, openai_client, sqlite_url):
    provider.default_reply = REPLY
    caller = Caller(GPT4O, openai_client, False, False)
    estimate, cost = GPT4O.estimate(), GPT4O.cost()
    roomy = obsdeco.Budget(limit_usd=1.0, scope="project", window="1d", name="roomy")
    tight = obsdeco.Budget(limit_usd=estimate + cost / 2, scope="agent", name="tight")
    obsdeco.configure(project="shop", database_url=sqlite_url, budgets=[roomy, tight])

    @obsdeco.observe_agent(agent_name("Writer"))
    def writer() -> None:
        caller.send_sync()

    writer()
    with pytest.raises(obsdeco.BudgetExceeded) as refused:
        writer()

    assert refused.value.budget == "tight"
    # The project budget held the refused call's worst case for a moment only.
    assert stored_accounts(sqlite_url) == [("roomy | shop", today(), 1.0, exactly(cost), 0.0)]


# --- what a call reserves ---------------------------------------------------------------------


async def test_without_max_tokens_the_output_is_bounded_by_the_context_window(
    patched, provider, client, sqlite_url
):
    provider.default_reply = REPLY
    obsdeco.configure(
        project="shop",
        database_url=sqlite_url,
        budgets=[obsdeco.Budget(limit_usd=1.0, scope="project")],
    )
    caller = Caller(GPT4O, client, isinstance(client, openai.AsyncOpenAI), False)
    with pytest.raises(obsdeco.BudgetExceeded) as refused:
        await caller.send(max_tokens=openai.omit)
    await caller.send(max_tokens=90_000)  # $0.90 of output at most

    assert refused.value.estimate_usd == exactly(GPT4O.estimate(max_tokens=128_000))
    assert len(provider.requests) == 1


async def test_an_anthropic_system_prompt_counts_in_the_input_bound(
    patched, provider, anthropic_client, sqlite_url
):
    provider.default_reply = REPLY
    obsdeco.configure(database_url=sqlite_url)
    system = "Réponds en français."
    limit = HAIKU.estimate() / 2

    @obsdeco.observe_session(budget_usd=limit)
    def session() -> None:
        Caller(HAIKU, anthropic_client, False, False).send_sync(system=system)

    with pytest.raises(obsdeco.BudgetExceeded) as refused:
        session()

    parts = {"messages": MESSAGES, "system": system}
    bound = len(json.dumps(parts, ensure_ascii=False).encode())
    assert refused.value.estimate_usd == exactly((bound * 1.25 + MAX_TOKENS * 5.0) / 1e6)
    assert provider.requests == []


def test_a_raw_http_call_is_refused_before_its_request(patched, provider, sqlite_url):
    obsdeco.configure(database_url=sqlite_url)
    body = {"model": "gpt-4o", "messages": MESSAGES, "max_tokens": MAX_TOKENS}

    @obsdeco.observe_session(budget_usd=GPT4O.estimate() / 2)
    def session() -> None:
        with httpx.Client() as http:
            http.post(f"{provider.openai_base_url}/chat/completions", json=body)

    with pytest.raises(obsdeco.BudgetExceeded) as refused:
        session()

    assert refused.value.estimate_usd == exactly(GPT4O.estimate())
    assert provider.requests == []


# --- settling ---------------------------------------------------------------------------------


async def test_a_failed_call_releases_its_reservation_and_costs_nothing(
    caller, provider, sqlite_url
):
    model = caller.model
    limit = model.estimate() + model.cost() / 2
    budget = obsdeco.Budget(limit_usd=limit, scope="project", name="capped")
    obsdeco.configure(project="shop", database_url=sqlite_url, budgets=[budget])
    provider.enqueue(Reply.error(500))

    with pytest.raises((openai.InternalServerError, anthropic.InternalServerError)):
        await caller.send()
    assert stored_accounts(sqlite_url) == [("capped | shop", _epoch(), limit, 0.0, 0.0)]
    await caller.send()  # the whole limit is there again
    with pytest.raises(obsdeco.BudgetExceeded):
        await caller.send()

    assert len(provider.requests) == 2
    assert stored_accounts(sqlite_url) == [
        ("capped | shop", _epoch(), limit, exactly(model.cost()), 0.0)
    ]


def _epoch() -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC)


async def test_a_failed_settlement_does_no_harm(
    patched, provider, openai_client, sqlite_url, monkeypatch
):
    provider.default_reply = REPLY
    budget = obsdeco.Budget(limit_usd=1.0, scope="project")
    obsdeco.configure(project="shop", database_url=sqlite_url, budgets=[budget])
    faults = obsdeco.stats().internal_faults

    def broken(*args: Any, **kwargs: Any) -> None:
        raise sqlalchemy.exc.OperationalError("UPDATE budget_accounts", {}, OSError("gone"))

    monkeypatch.setattr(DatabaseAccounts, "settle", broken)
    Caller(GPT4O, openai_client, False, False).send_sync()

    assert len(provider.requests) == 1
    assert obsdeco.stats().internal_faults == faults + 1


# --- races ------------------------------------------------------------------------------------

RACE_SCOPES = ["session", "agent", "project-sqlite", "project-postgres"]
RACE_CALLS = [("openai", False), ("anthropic", True)]
"""(SDK, streamed) of the racing calls."""


def race_budget(request: pytest.FixtureRequest, scope: str, limit: float) -> Callable[[Any], Any]:
    """Configure a budget of `scope` and `limit`; the decorator of the code that races in it."""
    store = scope.removeprefix("project-")
    url = request.getfixturevalue(f"{store}_url" if store != scope else "sqlite_url")
    budgets = []
    racer = agent_name("Racer")
    if scope == "agent":
        budgets = [obsdeco.Budget(limit_usd=limit, scope="agent", agent=racer)]
    elif scope != "session":
        budgets = [obsdeco.Budget(limit_usd=limit, scope="project", name="race")]
    obsdeco.configure(project="race", database_url=url, budgets=budgets)
    if scope == "session":
        return obsdeco.observe_session(budget_usd=limit)
    if scope == "agent":
        return obsdeco.observe_agent(racer)
    return lambda function: function


def assert_raced(
    refusals: list[Any], sent: list[Any], provider: ProviderServer, model: Model
) -> None:
    """While the 5 admitted calls were held by the provider, the 15 others were refused with
    their 5 worst cases reserved; exactly 5 requests arrived."""
    estimate = model.estimate()
    assert [refusal_fields(refusal)[3:] for refusal in refusals] == [
        (0.0, exactly(ADMITTED * estimate), exactly(estimate))
    ] * (RACERS - ADMITTED)
    assert sent == ["sent"] * ADMITTED
    assert len(provider.requests) == ADMITTED


@pytest.fixture
def release(provider: ProviderServer) -> Iterator[threading.Event]:
    """The provider holds every reply until this is set (set at the end in any case)."""
    event = threading.Event()
    provider.default_reply = dataclasses.replace(REPLY, hold=event)
    yield event
    event.set()


@pytest.mark.parametrize(("sdk", "streamed"), RACE_CALLS)
@pytest.mark.parametrize("scope", RACE_SCOPES)
def test_20_threads_racing_for_a_budget_of_5_calls_send_exactly_5(
    request, patched, provider, clients, release, scope, sdk, streamed
):
    caller = make_caller(clients, sdk, False, streamed)
    estimate = caller.model.estimate()
    in_budget = race_budget(request, scope, ADMITTED * estimate + estimate / 2)
    outcomes: queue.Queue[Any] = queue.Queue()
    start = threading.Barrier(RACERS)

    def attempt() -> None:
        start.wait()
        try:
            caller.send_sync()
        except obsdeco.BudgetExceeded as refusal:
            outcomes.put(refusal)
        else:
            outcomes.put("sent")

    @in_budget
    def race() -> tuple[list[Any], list[Any]]:
        threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(attempt,))
            for _ in range(RACERS)
        ]
        for thread in threads:
            thread.start()
        try:
            refusals = [outcomes.get(timeout=60) for _ in range(RACERS - ADMITTED)]
            provider.wait_for_requests(ADMITTED, timeout=60)
        finally:
            release.set()
        for thread in threads:
            thread.join()
        return refusals, [outcomes.get_nowait() for _ in range(ADMITTED)]

    refusals, sent = race()

    assert_raced(refusals, sent, provider, caller.model)
    assert outcomes.empty()


@pytest.mark.parametrize(("sdk", "streamed"), RACE_CALLS)
@pytest.mark.parametrize("scope", RACE_SCOPES)
async def test_20_asyncio_tasks_racing_for_a_budget_of_5_calls_send_exactly_5(
    request, patched, provider, clients, release, scope, sdk, streamed
):
    caller = make_caller(clients, sdk, True, streamed)
    estimate = caller.model.estimate()
    in_budget = race_budget(request, scope, ADMITTED * estimate + estimate / 2)
    outcomes: asyncio.Queue[Any] = asyncio.Queue()

    async def attempt() -> None:
        try:
            await caller.send()
        except obsdeco.BudgetExceeded as refusal:
            outcomes.put_nowait(refusal)
        else:
            outcomes.put_nowait("sent")

    @in_budget
    async def race() -> tuple[list[Any], list[Any]]:
        tasks = [asyncio.create_task(attempt()) for _ in range(RACERS)]
        try:
            refusals = [
                await asyncio.wait_for(outcomes.get(), 60) for _ in range(RACERS - ADMITTED)
            ]
            await asyncio.to_thread(provider.wait_for_requests, ADMITTED, 60)
        finally:
            release.set()
        await asyncio.gather(*tasks)
        return refusals, [outcomes.get_nowait() for _ in range(ADMITTED)]

    refusals, sent = await race()

    assert_raced(refusals, sent, provider, caller.model)
    assert outcomes.empty()


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_two_processes_sharing_a_project_budget_never_pass_it_together(
    request, provider, release, store
):
    url = request.getfixturevalue(f"{store}_url")
    estimate, cost = GPT4O.estimate(), GPT4O.cost()
    limit = ADMITTED * estimate + estimate / 2
    context = multiprocessing.get_context("spawn")
    outcomes = context.Queue()
    per_process = RACERS // 2
    children = [
        context.Process(
            target=budget_workers.spend,
            args=(url, provider.openai_base_url, limit, per_process, outcomes),
        )
        for _ in range(2)
    ]
    for child in children:
        child.start()
    try:
        refused = [outcomes.get(timeout=120) for _ in range(RACERS - ADMITTED)]
        provider.wait_for_requests(ADMITTED, timeout=60)
    finally:
        release.set()
    sent = [outcomes.get(timeout=60) for _ in range(ADMITTED)]
    for child in children:
        child.join(timeout=60)

    assert [child.exitcode for child in children] == [0, 0]
    assert refused == ["refused"] * (RACERS - ADMITTED)
    assert sent == ["sent"] * ADMITTED
    assert len(provider.requests) == ADMITTED
    label = f"project ${limit:g} per 1d | {budget_workers.PROJECT}"
    assert stored_accounts(url) == [(label, today(), limit, exactly(ADMITTED * cost), 0.0)]


# --- soft limits and what is let through ------------------------------------------------------


def test_passing_soft_usd_logs_one_warning_naming_the_budget(
    patched, provider, openai_client, sqlite_url, caplog
):
    provider.default_reply = REPLY
    cost = GPT4O.cost()
    budget = obsdeco.Budget(limit_usd=1.0, soft_usd=1.5 * cost, scope="project", name="soft one")
    obsdeco.configure(project="shop", database_url=sqlite_url, budgets=[budget])
    caplog.set_level(logging.WARNING, logger="obsdeco.budgets")
    caller = Caller(GPT4O, openai_client, False, False)

    caller.send_sync()
    assert caplog.records == []
    for _ in range(3):
        caller.send_sync()

    assert len(provider.requests) == 4
    (warning,) = caplog.records
    assert (warning.name, warning.levelname) == ("obsdeco.budgets", "WARNING")
    assert warning.getMessage() == (
        f"obsdeco budget 'soft one' passed its soft limit: ${2 * cost:.6f} spent of a soft "
        f"${1.5 * cost:.6f} (shop)"
    )


def test_a_call_whose_cost_cannot_be_bounded_is_let_through_and_logged(
    patched, provider, openai_client, sqlite_url, caplog
):
    provider.default_reply = REPLY
    obsdeco.configure(database_url=sqlite_url)
    caplog.set_level(logging.WARNING, logger="obsdeco.budgets")
    model = f"in-house-{uuid.uuid4().hex[:8]}"
    unestimated = obsdeco.stats().budget_unestimated
    caller = Caller(GPT4O, openai_client, False, False)

    @obsdeco.observe_session(budget_usd=1e-9)
    def session() -> None:
        caller.send_sync(model=model)
        caller.send_sync(model=model)

    session()

    assert [sent.model for sent in provider.requests] == [model, model]
    assert obsdeco.stats().budget_unestimated == unestimated + 2
    assert [record.getMessage() for record in caplog.records] == [
        f"obsdeco cannot bound the cost of calls to {model!r} (no price, or no limit on its "
        "output): they are let through, outside every budget"
    ]


def test_project_accounts_out_of_reach_let_the_call_through(
    patched, provider, openai_client, sqlite_url, monkeypatch, caplog
):
    provider.default_reply = REPLY
    budget = obsdeco.Budget(limit_usd=1e-9, scope="project", name="far away")
    obsdeco.configure(project="shop", database_url=sqlite_url, budgets=[budget])
    caplog.set_level(logging.WARNING, logger="obsdeco.budgets")
    unreachable = obsdeco.stats().budget_unreachable

    def down(*args: Any, **kwargs: Any) -> None:
        raise sqlalchemy.exc.OperationalError("UPDATE budget_accounts", {}, OSError("refused"))

    monkeypatch.setattr(DatabaseAccounts, "reserve", down)
    Caller(GPT4O, openai_client, False, False).send_sync()

    assert len(provider.requests) == 1
    assert obsdeco.stats().budget_unreachable == unreachable + 1
    (warning,) = caplog.records
    assert warning.getMessage() == (
        "obsdeco could not reach the accounts of budget 'far away'; the call is let through"
    )


async def test_a_cache_hit_needs_no_reservation(patched, provider, client, sqlite_url):
    provider.default_reply = REPLY
    obsdeco.configure(database_url=sqlite_url)
    caller = Caller(GPT4O, client, isinstance(client, openai.AsyncOpenAI), False)
    messages = [{"role": "user", "content": f"Grüße {uuid.uuid4().hex}"}]  # a fresh cache entry
    estimate = GPT4O.estimate(messages=messages)

    @obsdeco.observe_session(budget_usd=estimate + GPT4O.cost() / 2)
    async def session() -> obsdeco.BudgetExceeded:
        with obsdeco.cache():
            await caller.send(messages=messages)
            await caller.send(messages=messages)  # answered from the cache
            with pytest.raises(obsdeco.BudgetExceeded) as refused:
                await caller.send(messages=[*messages, {"role": "user", "content": "more"}])
        return refused.value

    refusal = await session()

    assert len(provider.requests) == 1
    assert refusal.spent_usd == exactly(GPT4O.cost())


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"limit_usd": 1.0, "soft_usd": 2.0},
            "Budget soft_usd (2.0) must not exceed limit_usd (1.0)",
        ),
        (
            {"limit_usd": 1.0, "window": "1x"},
            'Budget window must be a whole number and a unit (s, m, h, d or w), like "1h" or '
            "\"1d\"; got '1x'",
        ),
        ({"limit_usd": 1.0, "window": "0d"}, "Budget window must be longer than 0"),
        ({"limit_usd": 1.0, "agent": "Writer"}, 'Budget agent= narrows a budget of scope="agent"'),
        (
            {"limit_usd": 1.0, "scope": "session", "agent": "Writer"},
            'Budget agent= narrows a budget of scope="agent" only',
        ),
        (
            {"limit_usd": 1.0, "scope": "agent", "project": "shop"},
            'Budget project= narrows a budget of scope="project" only',
        ),
        ({"limit_usd": 0}, "limit_usd\n  Input should be greater than 0"),
        ({"limit_usd": -1.0}, "limit_usd\n  Input should be greater than 0"),
        ({"limit_usd": math.nan}, "limit_usd\n  Input should be a finite number"),
        ({"limit_usd": math.inf}, "limit_usd\n  Input should be a finite number"),
        ({"limit_usd": 1.0, "soft_usd": 0}, "soft_usd\n  Input should be greater than 0"),
        ({"limit_usd": 1.0, "scope": "team"}, "scope\n  Input should be 'session', 'agent' or"),
        ({"limit_usd": 1.0, "limit": 2.0}, "limit\n  Extra inputs are not permitted"),
    ],
)
def test_a_bad_budget_is_refused_naming_the_problem(fields, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        obsdeco.Budget(**fields)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "budget_usd must be a positive, finite number of dollars, got 0"),
        (-1, "budget_usd must be a positive, finite number of dollars, got -1"),
        (math.nan, "budget_usd must be a positive, finite number of dollars, got nan"),
        (math.inf, "budget_usd must be a positive, finite number of dollars, got inf"),
        ("a", "budget_usd must be a number of US dollars, got 'a'"),
        (True, "budget_usd must be a number of US dollars, got True"),
    ],
)
def test_a_bad_session_budget_is_refused_when_decorating(value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        obsdeco.observe_session(budget_usd=value)(lambda: None)


def test_budgets_are_configured_as_budgets(sqlite_url):
    with pytest.raises(ValueError, match="budgets"):
        obsdeco.configure(database_url=sqlite_url, budgets=["$5 a day"])  # type: ignore[list-item]
