"""The async API answers like the sync one and never blocks the event loop, on SQLite and
PostgreSQL: a database held still in the middle of a statement leaves the loop serving others."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Iterator
from typing import Any

import pytest
import sqlalchemy

import obsdeco
from obsdeco.collector import sessions_in_memory
from obsdeco.runtime import get_runtime

pytestmark = pytest.mark.usefixtures("configured")


class Gate:
    """Holds every SQL statement of the store's engine until released, once armed."""

    def __init__(self) -> None:
        self.armed = False
        self.entered = threading.Event()
        self.released = threading.Event()

    def before_execute(self, *_args: Any) -> None:
        if self.armed:
            self.entered.set()
            self.released.wait(30)


@pytest.fixture
def gate() -> Iterator[Gate]:
    engine = get_runtime().backend.engine
    held = Gate()
    sqlalchemy.event.listen(engine, "before_cursor_execute", held.before_execute)
    yield held
    held.released.set()
    sqlalchemy.event.remove(engine, "before_cursor_execute", held.before_execute)


def record_session(name: str = "async") -> obsdeco.Session:
    """A stored session with two calls to gpt-4o, no longer in memory (read from the store)."""
    observatory = obsdeco.Observatory()
    with observatory.track(name) as session:
        for prompt in (1_000, 3_000):
            observatory.record_call(
                provider="openai",
                model_name="gpt-4o",
                latency_ms=100.0,
                prompt_tokens=prompt,
                completion_tokens=500,
            )
    obsdeco.flush()
    sessions_in_memory.clear()
    return session


async def while_held(gate: Gate, awaitable: Awaitable[Any]) -> Any:
    """Await `awaitable` with the database held in its first statement: the loop runs other
    callbacks meanwhile (it is not blocked), then the database is let go."""
    gate.armed = True
    task = asyncio.ensure_future(awaitable)
    assert await asyncio.to_thread(gate.entered.wait, 30), "the database was never reached"
    served: list[bool] = []
    asyncio.get_running_loop().call_soon(served.append, True)
    await asyncio.sleep(0)
    assert served == [True]
    assert not task.done()
    gate.released.set()
    return await task


async def test_aget_report_reads_the_store_off_the_loop(gate: Gate) -> None:
    session = record_session()
    report = await while_held(gate, obsdeco.aget_report(session.id))
    assert report.model_dump() == obsdeco.get_report(session.id).model_dump()
    # gpt-4o: $2.50 per million input tokens, $10 per million output tokens.
    assert (report.totals.calls, report.totals.prompt_tokens) == (2, 4_000)
    assert report.cost.total_usd == pytest.approx(4_000 * 2.5e-6 + 1_000 * 10e-6)


async def test_aget_calls_reads_the_store_off_the_loop(gate: Gate) -> None:
    session = record_session()
    calls = await while_held(gate, obsdeco.aget_calls(session.id))
    assert [call.prompt_tokens for call in calls] == [1_000, 3_000]
    assert [call.cost_usd for call in calls] == pytest.approx([0.0075, 0.0125])


async def test_areport_aggregates_off_the_loop(gate: Gate) -> None:
    record_session("one")
    record_session("two")
    report = await while_held(gate, obsdeco.areport("test", model="gpt-4o"))
    assert (report.sessions, report.totals.calls) == (2, 4)
    assert report.cost.total_usd == pytest.approx(2 * (0.0075 + 0.0125))


async def test_aflush_waits_for_the_writer_off_the_loop(gate: Gate, configured: str) -> None:
    gate.armed = True
    observatory = obsdeco.Observatory()
    async with observatory.atrack("flushed") as session:
        observatory.record_call(
            provider="openai", model_name="gpt-4o", latency_ms=1.0, prompt_tokens=1
        )
    assert await while_held(gate, obsdeco.aflush(timeout=30)) is True
    gate.armed = False
    sessions_in_memory.clear()
    assert [call.prompt_tokens for call in obsdeco.get_calls(session.id)] == [1]


async def test_collector_and_observatory_counterparts(gate: Gate) -> None:
    session = record_session()
    collector = obsdeco.MetricsCollector("test")
    calls = await while_held(gate, collector.aget_calls(session))
    assert len(calls) == 2
    gate.entered.clear()
    gate.released.clear()
    report = await while_held(gate, obsdeco.Observatory().aget_report(session.id))
    assert report.totals.calls == 2
    gate.entered.clear()
    gate.released.clear()
    report = await while_held(gate, collector.aget_report(session.id))
    assert report.totals.calls == 2


async def test_atrack_gives_the_block_and_its_tasks_one_session() -> None:
    observatory = obsdeco.Observatory()

    async def call(tokens: int) -> None:
        await asyncio.sleep(0)
        observatory.record_call(
            provider="openai", model_name="gpt-4o", latency_ms=1.0, prompt_tokens=tokens
        )

    async with observatory.atrack("gathered", {"ticket": 7}) as session:
        assert obsdeco.current_session() is session
        await asyncio.gather(call(1), call(2), call(3))
    assert obsdeco.current_session() is None

    report = await observatory.aget_report(session)
    assert (report.session.status, report.session.metadata) == ("ok", {"ticket": 7})
    assert report.totals.prompt_tokens == 6


async def test_atrack_ends_the_session_with_the_error_and_lets_it_through() -> None:
    observatory = obsdeco.Observatory()
    with pytest.raises(KeyError, match="missing"):
        async with observatory.atrack("failing") as session:
            raise KeyError("missing")
    report = await observatory.aget_report(session)
    assert (report.session.status, report.session.error_type) == ("error", "KeyError")
