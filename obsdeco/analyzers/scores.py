"""The scores section of reports: mean scores by name, model, agent and experiment variant."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from obsdeco.analyzers.columns import NONE_KEY
from obsdeco.models import Score, ScoreBreakdown, ScoreStats
from obsdeco.storage.base import ReportStore, ScoreAggregate, ScoreFilter, ScoreGroup

_GROUPINGS: tuple[tuple[ScoreGroup, ...], ...] = (
    ("name",),
    ("model", "name"),
    ("agent_name", "name"),
    ("variant", "name"),
)


def _stats(row: ScoreAggregate) -> ScoreStats:
    return ScoreStats(count=row.count, mean=row.total / row.count)


def _breakdown(rows: Sequence[list[ScoreAggregate]]) -> ScoreBreakdown:
    by_name, by_model, by_agent, by_variant = rows
    breakdown = ScoreBreakdown(
        count=sum(row.count for row in by_name),
        by_name={row.group["name"]: _stats(row) for row in by_name},
    )
    for row in by_model:
        breakdown.by_model.setdefault(row.group["model"] or NONE_KEY, {})[row.group["name"]] = (
            _stats(row)
        )
    for row in by_agent:
        agent = row.group["agent_name"] or NONE_KEY
        breakdown.by_agent.setdefault(agent, {})[row.group["name"]] = _stats(row)
    for row in by_variant:
        variants = breakdown.by_variant.setdefault(row.group["experiment"], {})
        variants.setdefault(row.group["variant"], {})[row.group["name"]] = _stats(row)
    return breakdown


def aggregated(scores: Iterable[Score], group_by: Sequence[ScoreGroup]) -> list[ScoreAggregate]:
    """What `ReportStore.aggregate_scores` computes, over scores in memory."""
    sums: dict[tuple[tuple[str, str | None], ...], list[float]] = {}
    for score in scores:
        keys: list[list[tuple[str, str | None]]] = [[]]
        for key in group_by:
            if key == "variant":
                pairs = sorted(score.experiments.items())
                keys = [
                    [*known, ("experiment", experiment), ("variant", variant)]
                    for known in keys
                    for experiment, variant in pairs
                ]
            elif key in ("model", "agent_name") and score.call_id is None:
                keys = []
            else:
                keys = [[*known, (key, getattr(score, key))] for known in keys]
        for group in keys:
            found = sums.setdefault(tuple(group), [0, 0.0])
            found[0] += 1
            found[1] += score.value
    ordered = sorted(sums.items(), key=lambda item: [(v is not None, v or "") for _, v in item[0]])
    return [
        ScoreAggregate(group=dict(group), count=int(count), total=total)
        for group, (count, total) in ordered
    ]


def score_breakdown(scores: Sequence[Score]) -> ScoreBreakdown:
    """The scores section of a session report, from the session's scores."""
    return _breakdown([aggregated(scores, grouping) for grouping in _GROUPINGS])


def stored_score_breakdown(backend: ReportStore, where: ScoreFilter) -> ScoreBreakdown:
    """The scores section of a project report, aggregated by the store."""
    return _breakdown([backend.aggregate_scores(where, grouping) for grouping in _GROUPINGS])
