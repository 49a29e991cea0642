"""Latency percentiles (numpy's default linear definition), bottlenecks and agent time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from obsdeco.analyzers.columns import CallColumns, Groups
from obsdeco.models import AgentSpan, AgentTime, Bottleneck, LatencyBreakdown, TimeToFirstToken

_TOP_BOTTLENECKS = 5


def _bottlenecks(
    kind: Literal["agent", "operation"], groups: Groups, latency: np.ndarray, total_ms: float
) -> list[Bottleneck]:
    ranked = []
    for name, rows in groups.members():
        values = latency[rows]
        ranked.append(
            Bottleneck(
                kind=kind,
                name=name,
                calls=int(values.size),
                total_ms=float(values.sum()),
                share=float(values.sum() / total_ms) if total_ms else 0.0,
                p95_ms=float(np.percentile(values, 95)),
            )
        )
    ranked.sort(key=lambda item: (-item.total_ms, item.name))
    return ranked[:_TOP_BOTTLENECKS]


def _agent_time(columns: CallColumns, spans: Sequence[AgentSpan]) -> list[AgentTime]:
    llm_ms = columns.groups("agent").sums(columns.latency_ms) if columns.size else {}
    wall: dict[str, list[float]] = {}
    for span in spans:
        wall.setdefault(span.agent_name, []).append(span.duration_ms)
    return [
        AgentTime(
            agent_name=name,
            invocations=len(durations),
            wall_ms=float(sum(durations)),
            llm_ms=llm_ms.get(name, 0.0),
        )
        for name, durations in sorted(wall.items())
    ]


def analyze_latency(columns: CallColumns, spans: Sequence[AgentSpan]) -> LatencyBreakdown:
    """Percentiles over every call's latency; time to first token over streamed calls."""
    latency = columns.latency_ms
    if columns.size == 0:
        return LatencyBreakdown(agent_time=_agent_time(columns, spans))
    p50, p95, p99 = np.percentile(latency, [50, 95, 99])
    total = float(latency.sum())
    ttft = columns.time_to_first_token_ms[~np.isnan(columns.time_to_first_token_ms)]
    first_token = None
    if ttft.size:
        first_token = TimeToFirstToken(
            calls=int(ttft.size),
            p50_ms=float(np.percentile(ttft, 50)),
            p95_ms=float(np.percentile(ttft, 95)),
            avg_ms=float(ttft.mean()),
        )
    return LatencyBreakdown(
        p50_ms=float(p50),
        p95_ms=float(p95),
        p99_ms=float(p99),
        avg_ms=float(latency.mean()),
        total_ms=total,
        time_to_first_token=first_token,
        bottlenecks=[
            *_bottlenecks("agent", columns.groups("agent"), latency, total),
            *_bottlenecks("operation", columns.groups("operation"), latency, total),
        ],
        agent_time=_agent_time(columns, spans),
    )
