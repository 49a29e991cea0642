"""Text and Markdown renderings of session, project and savings reports."""

from __future__ import annotations

import json
from collections.abc import Iterable

from obsdeco.models import (
    CacheSummary,
    ProjectReport,
    RoutingSummary,
    SavingsReport,
    ScoreBreakdown,
    ScoreStats,
    SessionReport,
)

Report = SessionReport | ProjectReport | SavingsReport


def _usd(value: float | None) -> str:
    return "unknown" if value is None else f"${value:,.4f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def _counted(count: int, word: str) -> str:
    return f"{count:,} {word}" + ("" if count == 1 else "s")


def _calls(count: int) -> str:
    return _counted(count, "call")


def _mean(stats: ScoreStats) -> str:
    return f"{stats.mean:.3f} ({stats.count:,} score{'' if stats.count == 1 else 's'})"


def _score_sections(scores: ScoreBreakdown) -> list[tuple[str, list[tuple[str, str]]]]:
    """Mean scores by name, then per model, agent and experiment variant."""
    if not scores.count:
        return []

    def by(groups: dict[str, dict[str, ScoreStats]]) -> list[tuple[str, str]]:
        return [
            (f"{group} / {name}", _mean(stats))
            for group, names in groups.items()
            for name, stats in names.items()
        ]

    variants = {
        f"{experiment}={variant}": names
        for experiment, found in scores.by_variant.items()
        for variant, names in found.items()
    }
    return [
        ("Scores", [(name, _mean(stats)) for name, stats in scores.by_name.items()]),
        ("Scores by model", by(scores.by_model)),
        ("Scores by agent", by(scores.by_agent)),
        ("Scores by experiment variant", by(variants)),
    ]


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _title(report: Report) -> str:
    if isinstance(report, SavingsReport):
        return f"obsdeco savings: {report.project or 'all projects'}"
    if isinstance(report, ProjectReport):
        return f"obsdeco project report: {report.project or 'all projects'}"
    return f"obsdeco session report: {report.session.name or report.session.id}"


def _about(report: Report) -> tuple[str, list[tuple[str, str]]]:
    if isinstance(report, ProjectReport | SavingsReport):
        since = report.since.isoformat(timespec="seconds") if report.since else "the beginning"
        until = report.until.isoformat(timespec="seconds") if report.until else "now"
        return (
            "Project",
            [
                ("project", report.project or "all"),
                ("from", since),
                ("to", until),
            ]
            + ([("sessions", f"{report.sessions:,}")] if isinstance(report, ProjectReport) else []),
        )
    session = report.session
    return (
        "Session",
        [
            ("id", session.id),
            ("name", session.name or "-"),
            ("project", session.project_name),
            ("status", session.status),
            ("duration", _ms(report.totals.duration_ms)),
        ],
    )


def _sections(report: SessionReport | ProjectReport) -> list[tuple[str, list[tuple[str, str]]]]:
    totals, latency, quality = report.totals, report.latency, report.quality
    tokens = report.tokens
    token_note = (
        f" ({_calls(totals.calls_with_unknown_tokens)} without reported tokens)"
        if totals.calls_with_unknown_tokens
        else ""
    )
    sections: list[tuple[str, list[tuple[str, str]]]] = [
        _about(report),
        (
            "Totals",
            [
                ("calls", f"{_calls(totals.calls)} ({quality.errors:,} failed)"),
                ("cost", _usd(report.cost.total_usd)),
                (
                    "tokens",
                    f"{totals.total_tokens:,} = {totals.prompt_tokens:,} prompt "
                    f"+ {totals.completion_tokens:,} completion{token_note}",
                ),
                (
                    "cached tokens",
                    f"{tokens.cached_tokens:,} read, {tokens.cache_creation_tokens:,} written",
                ),
                ("reasoning tokens", f"{tokens.reasoning_tokens:,}"),
                ("success rate", f"{quality.success_rate:.1%}"),
                (
                    "SDK retries",
                    f"{quality.retries:,} ({quality.rate_limited_retries:,} after rate limits)",
                ),
            ],
        ),
        (
            "Latency",
            [
                (
                    "p50 / p95 / p99" + ("" if latency.percentiles_exact else " (within 1%)"),
                    " / ".join(_ms(v) for v in (latency.p50_ms, latency.p95_ms, latency.p99_ms)),
                ),
                ("average", _ms(latency.avg_ms)),
                ("total in LLM calls", _ms(latency.total_ms)),
            ]
            + (
                [
                    (
                        "first token p50 / p95",
                        f"{_ms(latency.time_to_first_token.p50_ms)} / "
                        f"{_ms(latency.time_to_first_token.p95_ms)}",
                    )
                ]
                if latency.time_to_first_token
                else []
            ),
        ),
        ("Cost by model", [(name, _usd(usd)) for name, usd in report.cost.by_model.items()]),
        (
            "Cost by provider",
            [(name, _usd(usd)) for name, usd in report.cost.by_provider.items()],
        ),
        ("Cost by agent", [(name, _usd(usd)) for name, usd in report.cost.by_agent.items()]),
        (
            "Bottlenecks",
            [
                (
                    f"{b.kind} {b.name}",
                    f"{b.share:.0%} of LLM time, p95 {_ms(b.p95_ms)}, {_calls(b.calls)}",
                )
                for b in latency.bottlenecks
            ],
        ),
        (
            "Agent time",
            [
                (
                    agent.agent_name,
                    f"{agent.invocations:,} run{'' if agent.invocations == 1 else 's'}, "
                    f"wall {_ms(agent.wall_ms)}, "
                    f"in LLM calls {_ms(agent.llm_ms)}",
                )
                for agent in latency.agent_time
            ],
        ),
        ("Errors by type", [(name, str(count)) for name, count in quality.errors_by_type.items()]),
        *_score_sections(report.scores),
    ]
    sections += [_cache(report.cache), _routing(report.routing)]
    if report.cost.unpriced_models:
        sections.append(
            ("Unpriced models (cost unknown)", [(name, "") for name in report.cost.unpriced_models])
        )
    sections.append(
        (
            "Suggestions",
            [
                (
                    suggestion.kind,
                    suggestion.message
                    + (
                        f" (saves ~{_usd(suggestion.estimated_savings_usd)})"
                        if suggestion.estimated_savings_usd is not None
                        else ""
                    ),
                )
                for suggestion in report.suggestions
            ]
            or [("none", "nothing to change on this evidence")],
        )
    )
    custom = getattr(report, "custom", {})
    if custom:
        sections.append(
            (
                "Custom analyzers",
                [(name, json.dumps(value, default=str)) for name, value in custom.items()],
            )
        )
    sections.append(("Prices", [("source", report.cost.price_source)]))
    return [(title, rows) for title, rows in sections if rows]


def _cache(cache: CacheSummary) -> tuple[str, list[tuple[str, str]]]:
    """The cache section; no rows (not shown) when no call was made inside obsdeco.cache()."""
    if not cache.hits and not cache.misses:
        return ("Response cache", [])
    return (
        "Response cache",
        [
            (
                "hits / misses",
                f"{cache.hits:,} / {cache.misses:,} (hit rate {_share(cache.hit_rate)})",
            ),
            ("saved", _usd(cache.saved_usd)),
        ],
    )


def _routing(routing: RoutingSummary) -> tuple[str, list[tuple[str, str]]]:
    """The routing section; no rows (not shown) without routed or shadow calls."""
    rows: list[tuple[str, str]] = []
    if routing.routed_calls:
        rows += [
            ("routed calls", f"{routing.routed_calls:,}"),
            ("saved", _usd(routing.saved_usd)),
            (
                "success rate",
                f"{_share(routing.routed_success_rate)} routed, "
                f"{_share(routing.unrouted_success_rate)} not routed",
            ),
        ]
    if routing.shadow_calls:
        rows += [
            ("shadow calls", f"{routing.shadow_calls:,}"),
            ("shadow would save", _usd(routing.shadow_saved_usd)),
        ]
    for name, rule in routing.by_rule.items():
        if rule.routed_calls:
            rows.append(
                (
                    f"rule {name}",
                    f"{_calls(rule.routed_calls)} routed, saved {_usd(rule.saved_usd)}, "
                    f"success {_share(rule.success_rate)}",
                )
            )
        if rule.shadow_calls:
            rows.append(
                (
                    f"rule {name} (shadow)",
                    f"{_calls(rule.shadow_calls)}, would save {_usd(rule.shadow_saved_usd)}, "
                    f"success {_share(rule.shadow_success_rate)}",
                )
            )
    return ("Routing", rows)


def _savings_sections(report: SavingsReport) -> list[tuple[str, list[tuple[str, str]]]]:
    sections = [
        _about(report),
        (
            "Saved",
            [
                ("in total", _usd(report.saved_usd)),
                (
                    "by the response cache",
                    f"{_usd(report.cache_saved_usd)} ({_calls(report.cache_hits)} answered)",
                ),
                (
                    "by the router",
                    f"{_usd(report.routing_saved_usd)} ({_calls(report.routed_calls)} routed)",
                ),
                ("shadow rules would save", _usd(report.shadow_saved_usd)),
                ("suggestions could still save", _usd(report.remaining_potential_usd)),
            ],
        ),
        (
            "Per day (UTC): cache / router / shadow",
            [
                (
                    day.day.isoformat(),
                    f"{_usd(day.cache_saved_usd)} ({_counted(day.cache_hits, 'hit')}) / "
                    f"{_usd(day.routing_saved_usd)} ({day.routed_calls:,} routed) / "
                    f"{_usd(day.shadow_saved_usd)}",
                )
                for day in report.days
            ],
        ),
        (
            "Suggestions",
            [
                (
                    suggestion.kind,
                    f"{suggestion.message} (saves ~{_usd(suggestion.estimated_savings_usd)})",
                )
                for suggestion in report.suggestions
                if suggestion.estimated_savings_usd
            ],
        ),
    ]
    return [(title, rows) for title, rows in sections if rows]


def _aligned(rows: Iterable[tuple[str, str]]) -> list[str]:
    rows = list(rows)
    width = max(len(label) for label, _ in rows)
    return [f"  {label.ljust(width)}  {value}".rstrip() for label, value in rows]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _all_sections(report: Report) -> list[tuple[str, list[tuple[str, str]]]]:
    if isinstance(report, SavingsReport):
        return _savings_sections(report)
    return _sections(report)


def render_text(report: Report) -> str:
    lines = [_title(report)]
    for title, rows in _all_sections(report):
        lines += ["", title, *_aligned(rows)]
    return "\n".join(lines)


def render_markdown(report: Report) -> str:
    lines = [f"# {_title(report)}"]
    for title, rows in _all_sections(report):
        lines += ["", f"## {title}", "", "| | |", "|---|---|"]
        lines += [f"| {_cell(label)} | {_cell(value)} |" for label, value in rows]
    return "\n".join(lines) + "\n"
