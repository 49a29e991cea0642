"""A report's sections drawn as Streamlit tables and charts: the session drill-down, the
response cache and routing sections, and the suggestions list.

Everything a user or an SDK named (projects, sessions, agents, models, metadata, error messages)
goes through elements that show text as text: `st.text`, `st.json`, dataframes and chart labels,
never Markdown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta

import altair as alt
import pandas as pd
import streamlit as st

from obsdeco.alerts.events import AlertEvent, shown_value
from obsdeco.dashboard.formatting import count, file_name, ms, plural, rounded_ms, share, usd
from obsdeco.engine.experiment_report import ExperimentReport
from obsdeco.models import (
    CacheSummary,
    RoutingSummary,
    ScoreBreakdown,
    ScoreStats,
    SessionRecord,
    SessionReport,
    Suggestion,
    TokenCounts,
)

MONEY = st.column_config.NumberColumn(format="$%.4f")
PERCENT = st.column_config.NumberColumn(format="percent")
NO_AGENT = "(no agent)"


def suggestions(found: Sequence[Suggestion]) -> None:
    """Each suggestion with its estimated savings and the evidence behind it."""
    if not found:
        st.text("Nothing to change on this evidence.")
    for suggestion in found:
        savings = suggestion.estimated_savings_usd
        with st.container(border=True):
            st.text(
                f"{suggestion.kind}: {suggestion.message}"
                + (f" (saves ~{usd(savings)})" if savings is not None else "")
            )
            if suggestion.evidence:
                st.text("\n".join(f"· {line}" for line in suggestion.evidence))


def cache_and_routing(cache: CacheSummary, routing: RoutingSummary) -> None:
    """The response cache's hits and misses and the route rules' calls, savings and quality;
    nothing when no call was made inside obsdeco.cache() nor matched a route rule."""
    if cache.hits or cache.misses:
        st.markdown("**Response cache**")
        st.text(
            f"{plural(cache.hits, 'hit')}, {plural(cache.misses, 'miss', 'misses')} "
            f"(hit rate {share(cache.hit_rate)}), saved {usd(cache.saved_usd)}"
        )
    if not routing.by_rule:
        return
    st.markdown("**Routing**")
    st.text(
        f"{plural(routing.routed_calls, 'call')} routed, saved {usd(routing.saved_usd)}; "
        f"success rate {share(routing.routed_success_rate)} routed, "
        f"{share(routing.unrouted_success_rate)} not routed"
    )
    _table(
        [
            {
                "Rule": name,
                "Routed calls": rule.routed_calls,
                "Saved (USD)": rule.saved_usd,
                "Success rate": rule.success_rate,
                "Shadow calls": rule.shadow_calls,
                "Shadow would save (USD)": rule.shadow_saved_usd,
                "Shadow success rate": rule.shadow_success_rate,
            }
            for name, rule in routing.by_rule.items()
        ],
        **{
            "Saved (USD)": MONEY,
            "Shadow would save (USD)": MONEY,
            "Success rate": PERCENT,
            "Shadow success rate": PERCENT,
        },
    )


def session_drilldown(report: SessionReport, record: SessionRecord) -> None:
    """One session: who and when, totals, timeline, cost, latency, tokens, quality, suggestions
    and calls, with the text report to download."""
    session = report.session
    st.subheader("Session")
    st.text(f"{session.name or '(unnamed)'} · {session.id}")
    totals = report.totals
    columns = st.columns(6)
    columns[0].metric("Cost", usd(totals.cost_usd))
    columns[1].metric("Calls", f"{totals.calls:,}")
    columns[2].metric("Tokens", count(totals.total_tokens))
    columns[3].metric("Errors", f"{totals.errors:,}")
    columns[4].metric("Success rate", share(report.quality.success_rate))
    columns[5].metric(
        "Duration", "-" if totals.duration_ms is None else f"{totals.duration_ms / 1000:,.1f} s"
    )
    _facts(report)
    st.download_button(
        "Download the text report",
        data=str(report),
        file_name=f"obsdeco-session-{file_name(session.id)}.txt",
        mime="text/plain",
    )
    _timeline(record)
    left, right = st.columns(2)
    with left:
        _cost_chart("Cost by model", "Model", report.cost.by_model)
    with right:
        _cost_chart("Cost by agent", "Agent", report.cost.by_agent)
    _latency(report)
    _tokens(report.tokens.by_model, report.tokens.by_agent)
    _quality(report)
    cache_and_routing(report.cache, report.routing)
    scores(report.scores)
    st.markdown("**Suggestions**")
    suggestions(report.suggestions)
    _calls(record)


def _table(rows: list[dict[str, object]], **column_config: object) -> None:
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", column_config=column_config)


def _facts(report: SessionReport) -> None:
    session = report.session
    facts: list[dict[str, object]] = [
        {"": "Project", "Value": session.project_name},
        {"": "Status", "Value": session.status},
        {"": "Started (UTC)", "Value": f"{session.started_at:%Y-%m-%d %H:%M:%S}"},
        {
            "": "Ended (UTC)",
            "Value": "-" if session.ended_at is None else f"{session.ended_at:%Y-%m-%d %H:%M:%S}",
        },
    ]
    if session.parent_id:
        facts.append({"": "Parent session", "Value": session.parent_id})
    if session.error_type or session.error_message:
        error = ": ".join(filter(None, (session.error_type, session.error_message)))
        facts.append({"": "Error", "Value": error})
    for experiment, variant in session.experiments.items():
        facts.append({"": f"Experiment {experiment}", "Value": variant})
    _table(facts)
    if session.metadata:
        st.markdown("**Metadata**")
        st.json(session.metadata, expanded=False)


def _timeline(record: SessionRecord) -> None:
    bars = [
        {
            "lane": f"agent {span.agent_name}",
            "start": span.started_at,
            "end": span.ended_at,
            "what": "agent",
        }
        for span in record.spans
    ] + [
        {
            "lane": f"{call.agent_name or NO_AGENT} · {call.model_key}",
            "start": call.timestamp,
            "end": call.timestamp + timedelta(milliseconds=call.latency_ms),
            "what": "LLM call" if call.success else "failed call",
        }
        for call in record.calls
    ]
    if not bars:
        return
    st.markdown("**Timeline**")
    lanes = alt.Chart(pd.DataFrame(bars)).encode(
        x=alt.X("start:T", title="UTC", axis=alt.Axis(format="%H:%M:%S", labelOverlap=True)),
        y=alt.Y("lane:N", title=None, axis=alt.Axis(labelLimit=0)),
        color=alt.Color("what:N", title=None),
        tooltip=[
            alt.Tooltip("lane:N", title="lane"),
            alt.Tooltip("start:T", format="%H:%M:%S.%L", title="start"),
            alt.Tooltip("end:T", format="%H:%M:%S.%L", title="end"),
        ],
    )
    # The tick keeps a call visible however short it is against the session's length.
    st.altair_chart(lanes.mark_bar().encode(x2="end:T") + lanes.mark_tick(), width="stretch")


def _cost_chart(title: str, key: str, costs: Mapping[str, float]) -> None:
    st.markdown(f"**{title}**")
    if not costs:
        st.text("No priced calls.")
        return
    frame = pd.DataFrame([{"name": name, "cost_usd": spent} for name, spent in costs.items()])
    st.altair_chart(
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("cost_usd:Q", title="USD"),
            y=alt.Y("name:N", title=key, sort="-x", axis=alt.Axis(labelLimit=0)),
            tooltip=[alt.Tooltip("name:N", title=key), alt.Tooltip("cost_usd:Q", format="$,.4f")],
        ),
        width="stretch",
    )


def _latency(report: SessionReport) -> None:
    latency = report.latency
    st.markdown("**Latency**")
    columns = st.columns(5)
    columns[0].metric("p50", ms(latency.p50_ms))
    columns[1].metric("p95", ms(latency.p95_ms))
    columns[2].metric("p99", ms(latency.p99_ms))
    columns[3].metric("Average", ms(latency.avg_ms))
    first_token = latency.time_to_first_token
    columns[4].metric("Time to first token (p50)", ms(first_token and first_token.p50_ms))
    if latency.bottlenecks:
        _table(
            [
                {
                    "Where": f"{row.kind} {row.name}",
                    "Calls": row.calls,
                    "LLM time (ms)": rounded_ms(row.total_ms),
                    "Share": row.share,
                    "p95 (ms)": rounded_ms(row.p95_ms),
                }
                for row in latency.bottlenecks
            ],
            Share=PERCENT,
        )
    if latency.agent_time:
        _table(
            [
                {
                    "Agent": row.agent_name,
                    "Runs": row.invocations,
                    "Wall time (ms)": rounded_ms(row.wall_ms),
                    "LLM time (ms)": rounded_ms(row.llm_ms),
                }
                for row in latency.agent_time
            ]
        )


def _tokens(by_model: Mapping[str, TokenCounts], by_agent: Mapping[str, TokenCounts]) -> None:
    st.markdown("**Tokens**")
    _table(
        [
            {
                "By": kind,
                "Name": name,
                "Calls": counts.calls,
                "Prompt": counts.prompt_tokens,
                "Completion": counts.completion_tokens,
                "Cached": counts.cached_tokens,
                "Reasoning": counts.reasoning_tokens,
                "Total": counts.total_tokens,
            }
            for kind, groups in (("model", by_model), ("agent", by_agent))
            for name, counts in groups.items()
        ]
    )


def _quality(report: SessionReport) -> None:
    quality = report.quality
    st.markdown("**Quality**")
    st.text(
        f"{plural(quality.errors, 'error')} in {plural(quality.calls, 'call')}, "
        f"{plural(quality.retries, 'retry', 'retries')} "
        f"({quality.rate_limited_retries:,} rate-limited)"
    )
    if quality.errors_by_type:
        _table([{"Error": kind, "Calls": calls} for kind, calls in quality.errors_by_type.items()])


def _score_rows(
    label: str, groups: Mapping[str, Mapping[str, ScoreStats]]
) -> list[dict[str, object]]:
    return [
        {label: group, "Score": name, "Mean": stats.mean, "Scores": stats.count}
        for group, names in groups.items()
        for name, stats in names.items()
    ]


def scores(found: ScoreBreakdown) -> None:
    """Mean scores by name, model, agent and experiment variant (nothing without scores)."""
    if not found.count:
        return
    st.markdown("**Scores**")
    mean = st.column_config.NumberColumn(format="%.3f")
    _table(
        [
            {"Score": name, "Mean": stats.mean, "Scores": stats.count}
            for name, stats in found.by_name.items()
        ],
        Mean=mean,
    )
    variants = {
        f"{experiment} = {variant}": names
        for experiment, by_variant in found.by_variant.items()
        for variant, names in by_variant.items()
    }
    for label, groups in (
        ("Model", found.by_model),
        ("Agent", found.by_agent),
        ("Experiment variant", variants),
    ):
        if groups:
            _table(_score_rows(label, groups), Mean=mean)


def experiment_report(report: ExperimentReport) -> None:
    """An experiment's variants side by side, its verdict, and the text report to download."""
    st.text(f"Winner: {report.winner or 'none'} · {report.verdict}")
    _table(
        [
            {
                "Variant": name,
                "Sessions": stats.sessions,
                "Calls": stats.calls,
                "Cost per session (USD)": stats.cost_per_session_usd,
                "vs best (USD)": None
                if stats.cost_per_session_diff is None
                else stats.cost_per_session_diff.value,
                "95% CI": ""
                if stats.cost_per_session_diff is None
                else f"{stats.cost_per_session_diff.low:+.6f} .. "
                f"{stats.cost_per_session_diff.high:+.6f}",
                "p50 latency (ms)": rounded_ms(stats.latency_p50_ms),
                "p95 latency (ms)": rounded_ms(stats.latency_p95_ms),
                "Success rate": stats.success_rate,
                "Mean score": stats.mean_score,
            }
            for name, stats in report.variants.items()
        ],
        **{
            "Cost per session (USD)": st.column_config.NumberColumn(format="$%.6f"),
            "vs best (USD)": st.column_config.NumberColumn(format="$%.6f"),
            "Success rate": PERCENT,
            "Mean score": st.column_config.NumberColumn(format="%.3f"),
        },
    )
    st.download_button(
        "Download the text report",
        data=str(report),
        file_name=f"obsdeco-experiment-{file_name(report.experiment)}.txt",
        mime="text/plain",
    )


def _calls(record: SessionRecord) -> None:
    st.markdown("**Calls**")
    _table(
        [
            {
                "Time (UTC)": call.timestamp,
                "Agent": call.agent_name or NO_AGENT,
                "Provider": call.provider_name,
                "Model": call.model_key,
                "Prompt tokens": call.prompt_tokens,
                "Completion tokens": call.completion_tokens,
                "Latency (ms)": rounded_ms(call.latency_ms),
                "Success": call.success,
                "Error": call.error_type or "",
            }
            for call in record.calls
        ],
        **{"Time (UTC)": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")},
    )


def alert_events(events: Sequence[AlertEvent], time_column: str) -> None:
    """Alert events as a table, newest first."""
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "Alert": event.alert,
                    "State": event.state,
                    "Metric": event.metric,
                    "Value": shown_value(event.metric, event.value),
                    "Threshold": f"{event.direction} {shown_value(event.metric, event.threshold)}",
                    "Window": "-" if event.metric == "budget" else event.window,
                    "Project": event.project or "(all projects)",
                    "Budget": event.budget or "",
                    time_column: event.fired_at,
                }
                for event in events
            ]
        ),
        hide_index=True,
        width="stretch",
        column_config={
            time_column: st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
        },
    )
