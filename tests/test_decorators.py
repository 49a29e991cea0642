"""@observe_session / @observe_agent: the four kinds of functions, attribution, propagation."""

from __future__ import annotations

import asyncio
import traceback
from concurrent.futures import ThreadPoolExecutor

import pytest

import obsdeco
from obsdeco import SessionResult, observe_agent, observe_session
from obsdeco.collector import implicit_session


def _chat(client, content: str = "hello") -> object:
    return client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": content}]
    )


def test_plain_function_session_returns_exactly_its_value(patched, openai_client):
    @observe_session
    def handle(ticket: str) -> dict[str, str]:
        _chat(openai_client)
        return {"ticket": ticket}

    assert handle("T-1") == {"ticket": "T-1"}
    assert handle.__name__ == "handle"


def test_return_report_gives_value_and_report(patched, openai_client):
    @observe_session(name="handle-ticket", metadata={"tier": "gold"}, return_report=True)
    def handle() -> str:
        _chat(openai_client)
        _chat(openai_client, "again")
        return "done"

    result = handle()

    assert isinstance(result, SessionResult)
    value, report = result
    assert value == "done"
    assert report.session.name == "handle-ticket"
    assert report.session.metadata == {"tier": "gold"}
    assert report.session.status == "ok"
    assert report.totals.calls == 2


async def test_async_session_and_agents(patched, async_openai_client):
    @observe_agent(name="Researcher", operation="search")
    async def research() -> None:
        await async_openai_client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "find"}]
        )

    @observe_agent
    async def writer() -> None:
        await research()
        await async_openai_client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "write"}]
        )

    @observe_session(return_report=True)
    async def handle() -> int:
        await writer()
        return 7

    value, report = await handle()

    assert value == 7
    calls = obsdeco.get_calls(report.session.id)
    assert [(c.agent_name, c.operation, c.model) for c in calls] == [
        ("Researcher", "search", "gpt-4o-mini"),
        ("writer", None, "gpt-4o"),
    ]
    record = obsdeco.get_report(report.session.id)
    assert {agent.agent_name for agent in record.latency.agent_time} == {"Researcher", "writer"}


def test_agent_spans_are_stored_with_their_parent(patched, openai_client):
    @observe_agent(name="Inner")
    def inner() -> None:
        _chat(openai_client)

    @observe_agent(name="Outer")
    def outer() -> None:
        inner()

    @observe_session
    def handle() -> str:
        outer()
        return obsdeco.current_session().id

    session_id = handle()
    obsdeco.flush()

    from obsdeco.runtime import get_runtime

    record = get_runtime().backend.get_session(session_id)
    spans = {span.agent_name: span for span in record.spans}
    assert spans["Inner"].parent_id == spans["Outer"].id
    assert spans["Outer"].parent_id is None
    assert spans["Outer"].duration_ms >= spans["Inner"].duration_ms


def test_raising_session_ends_in_error_and_the_exception_is_untouched(patched, openai_client):
    class TicketError(Exception):
        pass

    captured: dict[str, str] = {}

    @observe_session
    def handle() -> None:
        captured["id"] = obsdeco.current_session().id
        _chat(openai_client)
        raise TicketError("ticket T-9 is malformed")

    with pytest.raises(TicketError, match="ticket T-9 is malformed") as raised:
        handle()

    frames = [frame.name for frame in traceback.extract_tb(raised.value.__traceback__)]
    assert frames[-1] == "handle"
    report = obsdeco.get_report(captured["id"])
    assert report.session.status == "error"
    assert report.session.error_type == "TicketError"
    assert report.totals.calls == 1


def test_nested_sessions_are_children_and_take_their_own_calls(patched, openai_client):
    ids: dict[str, str] = {}

    @observe_session(name="child")
    def child() -> None:
        ids["child"] = obsdeco.current_session().id
        _chat(openai_client)
        _chat(openai_client)

    @observe_session(name="parent")
    def parent() -> None:
        ids["parent"] = obsdeco.current_session().id
        _chat(openai_client)
        child()
        _chat(openai_client)

    parent()

    child_report = obsdeco.get_report(ids["child"])
    assert child_report.session.parent_id == ids["parent"]
    assert child_report.totals.calls == 2
    assert obsdeco.get_report(ids["parent"]).totals.calls == 2


def test_generator_session_stays_open_until_the_consumer_finishes(patched, openai_client):
    @observe_session(name="stream-answer")
    def answer():
        for word in ("one", "two", "three"):
            _chat(openai_client, word)
            yield obsdeco.current_session()

    generator = answer()
    assert obsdeco.current_session() is None  # created, not started

    first = next(generator)
    assert obsdeco.current_session() is None  # active only while the body runs
    assert first.status == "running"
    rest = list(generator)

    assert [session.id for session in rest] == [first.id, first.id]
    assert first.status == "ok"
    assert obsdeco.get_report(first.id).totals.calls == 3


def test_generator_closed_early_ends_its_session_once(patched, openai_client):
    @observe_session
    def answer():
        while True:
            _chat(openai_client)
            yield obsdeco.current_session()

    generator = answer()
    session = next(generator)
    next(generator)
    generator.close()

    assert session.status == "ok"
    assert obsdeco.get_report(session.id).totals.calls == 2


def test_generator_send_and_throw_reach_the_inner_generator(patched):
    @observe_agent
    def echo():
        received = []
        try:
            while True:
                received.append((yield len(received)))
        except KeyError:
            yield received

    generator = echo()
    assert next(generator) == 0
    assert generator.send("a") == 1
    assert generator.send("b") == 2
    assert generator.throw(KeyError("stop")) == ["a", "b"]


async def test_async_generator_agent_spans_its_whole_consumption(patched, async_openai_client):
    @observe_agent(name="Streamer")
    async def produce():
        for word in ("a", "b"):
            await async_openai_client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": word}]
            )
            yield word

    @observe_session(return_report=True)
    async def handle() -> list[str]:
        return [word async for word in produce()]

    words, report = await handle()

    assert words == ["a", "b"]
    calls = obsdeco.get_calls(report.session.id)
    assert [call.agent_name for call in calls] == ["Streamer", "Streamer"]
    assert [
        agent.invocations for agent in obsdeco.get_report(report.session.id).latency.agent_time
    ] == [1]


def test_return_report_on_a_generator_is_rejected_at_decoration():
    with pytest.raises(TypeError, match="return_report=True cannot be used on generator"):

        @observe_session(return_report=True)
        def answer():
            yield 1

    with pytest.raises(TypeError, match="generator"):

        @observe_session(return_report=True)
        async def answer_async():
            yield 1


async def test_a_thousand_concurrent_sessions_each_get_their_own_calls(patched):
    session_ids: list[str] = []

    @observe_agent(name="Worker")
    async def work(count: int) -> None:
        for _ in range(count):
            await asyncio.sleep(0)
            obsdeco.Observatory().record_call(
                provider="openai", model_name="gpt-4o-mini", latency_ms=1, prompt_tokens=count
            )

    @observe_session
    async def handle(count: int) -> None:
        session_ids.append(obsdeco.current_session().id)
        await work(count)

    await asyncio.gather(*(handle(index % 5 + 1) for index in range(1_000)))

    reports = [obsdeco.get_report(session_id) for session_id in session_ids]
    assert len({report.session.id for report in reports}) == 1_000
    for report in reports:
        count = report.totals.calls
        assert 1 <= count <= 5
        assert report.totals.prompt_tokens == count * count
    assert sum(report.totals.calls for report in reports) == 200 * (1 + 2 + 3 + 4 + 5)


def test_thread_pool_jobs_keep_their_submitters_session(patched, openai_client):
    @observe_agent(name="Fetcher")
    def fan_out() -> None:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda word: _chat(openai_client, word), ["a", "b", "c", "d", "e"]))

    @observe_session(return_report=True)
    def handle() -> None:
        fan_out()

    _, report = handle()

    calls = obsdeco.get_calls(report.session.id)
    assert len(calls) == 5
    assert {call.agent_name for call in calls} == {"Fetcher"}


def test_thread_pool_outside_sessions_is_untouched_and_calls_go_to_the_implicit_session(
    patched, openai_client
):
    with ThreadPoolExecutor(max_workers=2) as pool:
        assert pool.submit(obsdeco.current_session).result() is None
        pool.submit(_chat, openai_client).result()

    obsdeco.flush()
    calls = obsdeco.get_calls(implicit_session().id)
    assert len(calls) == 1
    assert calls[0].agent_name is None


def test_calls_outside_any_session_are_never_lost(patched, openai_client):
    _chat(openai_client)
    _chat(openai_client)
    obsdeco.flush()

    session = implicit_session()
    assert session.name.startswith("implicit:")
    assert len(obsdeco.get_calls(session.id)) == 2


def test_the_name_may_come_first(configured):
    @obsdeco.observe_agent("Researcher")
    def research() -> None:
        pass

    @obsdeco.observe_session("handle-ticket", return_report=True)
    def job() -> None:
        research()

    result = job()

    assert result.report.session.name == "handle-ticket"
    assert [agent.agent_name for agent in result.report.latency.agent_time] == ["Researcher"]


def test_a_name_given_twice_or_a_wrong_argument_is_refused():
    with pytest.raises(TypeError, match=r"observe_agent\(\) got two names: 'a' and name='b'"):
        obsdeco.observe_agent("a", name="b")
    with pytest.raises(TypeError, match=r"observe_session\(\) takes a function or a name, got int"):
        obsdeco.observe_session(3)  # type: ignore[call-overload]
