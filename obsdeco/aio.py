"""The async API: what may wait for the database, awaited off the event loop.

Each coroutine runs its blocking counterpart in a worker thread (`asyncio.to_thread`, which
carries the caller's context: its session and agent), so the loop keeps serving other tasks
while the store answers. Recording needs no async version: it only queues records.
`MetricsCollector.aget_report` / `aget_calls` and `Observatory.atrack` / `aget_report` are
the methods' counterparts.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from obsdeco.collector import get_calls, get_report, report
from obsdeco.models import LLMCall, ProjectReport, SessionReport
from obsdeco.runtime import flush


async def aflush(timeout: float | None = None) -> bool:
    """`obsdeco.flush()`, awaited without blocking the event loop."""
    return await asyncio.to_thread(flush, timeout)


async def aget_report(session_id: str) -> SessionReport:
    """`obsdeco.get_report()`, awaited without blocking the event loop."""
    return await asyncio.to_thread(get_report, session_id)


async def aget_calls(session_id: str) -> list[LLMCall]:
    """`obsdeco.get_calls()`, awaited without blocking the event loop."""
    return await asyncio.to_thread(get_calls, session_id)


async def areport(
    project: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    model: str | None = None,
    agent: str | None = None,
) -> ProjectReport:
    """`obsdeco.report()`, awaited without blocking the event loop."""
    return await asyncio.to_thread(report, project, since, until, model=model, agent=agent)
