"""The figures of an `ExperimentReport`: per-variant statistics over sessions, differences
against the cheapest variant by bootstrap over sessions, and the winner rule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt

from obsdeco.engine.experiment_report import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CONFIDENCE,
    MIN_SESSIONS,
    RELATIVE_TOLERANCE,
    Difference,
    ExperimentReport,
    VariantStats,
)
from obsdeco.models import LLMCall, Score

FloatArray = npt.NDArray[np.float64]


@dataclass
class _Sessions:
    """One variant's sessions as columns (one row per session), and its calls' latencies."""

    ids: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def columns(self, calls: Sequence[LLMCall], scores: Sequence[Score]) -> dict[str, FloatArray]:
        row = {session_id: index for index, session_id in enumerate(self.ids)}
        found = {
            name: np.zeros(len(self.ids))
            for name in ("cost", "calls", "successes", "scores", "score_total")
        }
        for call in calls:
            index = row[call.session_id]
            found["cost"][index] += call.cost_usd or 0.0
            found["calls"][index] += 1
            found["successes"][index] += call.success
            self.latencies.append(call.latency_ms)
        for score in scores:
            index = row[score.session_id]
            found["scores"][index] += 1
            found["score_total"][index] += score.value
        return found


def _ratio(numerator: FloatArray, denominator: FloatArray) -> float | None:
    total = float(denominator.sum())
    return None if total == 0 else float(numerator.sum()) / total


def _bootstrap(
    variant: tuple[FloatArray, FloatArray | None], best: tuple[FloatArray, FloatArray | None]
) -> Difference | None:
    """The variant's statistic minus the best's (a mean, or a ratio of sums when a
    denominator is given), with a percentile interval from resampling each one's sessions."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)

    def statistic(
        numerator: FloatArray, denominator: FloatArray | None, picks: npt.NDArray[np.int64]
    ) -> FloatArray:
        if denominator is None:
            return numerator[picks].mean(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return numerator[picks].sum(axis=1) / denominator[picks].sum(axis=1)

    value_a = _point(*variant)
    value_b = _point(*best)
    if value_a is None or value_b is None:
        return None
    size_a, size_b = len(variant[0]), len(best[0])
    picks_a = rng.integers(0, size_a, size=(BOOTSTRAP_RESAMPLES, size_a))
    picks_b = rng.integers(0, size_b, size=(BOOTSTRAP_RESAMPLES, size_b))
    differences = statistic(*variant, picks_a) - statistic(*best, picks_b)
    differences = differences[np.isfinite(differences)]
    if differences.size == 0:
        return None
    tail = (1.0 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(differences, [tail, 100 - tail])
    return Difference(value=value_a - value_b, low=float(low), high=float(high))


def _point(numerator: FloatArray, denominator: FloatArray | None) -> float | None:
    if denominator is None:
        return float(numerator.mean()) if numerator.size else None
    return _ratio(numerator, denominator)


def _cheaper(diff: Difference | None, best_cost: float, other_cost: float) -> bool:
    """Whether the other variant costs significantly more than the best, beyond rounding."""
    if diff is None or diff.low <= 0.0:
        return False
    scale = max(abs(best_cost), abs(other_cost))
    return scale > 0 and diff.value / scale > RELATIVE_TOLERANCE


def build_experiment_report(
    experiment: str,
    project: str | None,
    since: datetime | None,
    until: datetime | None,
    assigned: dict[str, str],
    calls: Sequence[LLMCall],
    scores: Sequence[Score],
) -> ExperimentReport:
    """The report from the sessions assigned (id -> variant), their priced calls that carry
    the assignment, and their scores."""
    variants: dict[str, _Sessions] = {}
    for session_id, variant in sorted(assigned.items(), key=lambda item: item[1]):
        variants.setdefault(variant, _Sessions()).ids.append(session_id)
    calls_of: dict[str, list[LLMCall]] = {name: [] for name in variants}
    for call in calls:
        variant = assigned.get(call.session_id)
        if variant is not None and call.experiments.get(experiment) == variant:
            calls_of[variant].append(call)
    scores_of: dict[str, list[Score]] = {name: [] for name in variants}
    for score in scores:
        variant = assigned.get(score.session_id)
        if variant is not None:
            scores_of[variant].append(score)
    columns = {
        name: sessions.columns(calls_of[name], scores_of[name])
        for name, sessions in variants.items()
    }
    stats = {
        name: _variant_stats(columns[name], sessions.latencies)
        for name, sessions in variants.items()
    }
    best = min(stats, key=lambda name: stats[name].cost_per_session_usd) if stats else None
    for name, found in stats.items():
        if name == best:
            _zero_differences(found)
        elif best is not None:
            _compare(found, columns[name], columns[best])
    winner, verdict = _judge(stats, best)
    return ExperimentReport(
        experiment=experiment,
        project=project,
        since=since,
        until=until,
        variants=stats,
        best=best,
        winner=winner,
        verdict=verdict,
        unpriced_calls=sum(1 for call in calls if call.cost_usd is None),
    )


def _variant_stats(column: dict[str, FloatArray], latencies: list[float]) -> VariantStats:
    calls = int(column["calls"].sum())
    p50, p95 = (
        (float(value) for value in np.percentile(latencies, [50, 95]))
        if latencies
        else (None, None)
    )
    return VariantStats(
        sessions=len(column["cost"]),
        calls=calls,
        errors=calls - int(column["successes"].sum()),
        cost_per_session_usd=float(column["cost"].mean()),
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        success_rate=_ratio(column["successes"], column["calls"]),
        mean_score=_ratio(column["score_total"], column["scores"]),
        scores=int(column["scores"].sum()),
    )


def _compare(
    stats: VariantStats, column: dict[str, FloatArray], best: dict[str, FloatArray]
) -> None:
    """Set the variant's differences against the best (when both have two sessions or more:
    one session says nothing of the spread)."""
    if len(column["cost"]) < 2 or len(best["cost"]) < 2:
        return
    stats.cost_per_session_diff = _bootstrap((column["cost"], None), (best["cost"], None))
    stats.success_rate_diff = _bootstrap(
        (column["successes"], column["calls"]), (best["successes"], best["calls"])
    )
    stats.mean_score_diff = _bootstrap(
        (column["score_total"], column["scores"]), (best["score_total"], best["scores"])
    )


def _zero_differences(stats: VariantStats) -> None:
    """The best variant against itself."""
    zero = Difference(value=0.0, low=0.0, high=0.0)
    stats.cost_per_session_diff = zero
    stats.success_rate_diff = None if stats.success_rate is None else zero
    stats.mean_score_diff = None if stats.mean_score is None else zero


def _judge(stats: dict[str, VariantStats], best: str | None) -> tuple[str | None, str]:
    """(winner or None, why)."""
    if best is None:
        return None, "no session was assigned in this experiment"
    if len(stats) < 2:
        return None, f"only variant {best!r} has sessions"
    short = {name: found.sessions for name, found in stats.items() if found.sessions < MIN_SESSIONS}
    if short:
        listed = ", ".join(f"{name!r} has {count}" for name, count in short.items())
        return None, f"too few sessions: each variant needs {MIN_SESSIONS} ({listed})"
    chosen = stats[best]
    for name, other in stats.items():
        if name == best:
            continue
        diff = other.cost_per_session_diff
        if not _cheaper(diff, chosen.cost_per_session_usd, other.cost_per_session_usd):
            return None, f"{best!r} is not significantly cheaper per session than {name!r}"
        for label, quality in (
            ("success rate", other.success_rate_diff),
            ("mean score", other.mean_score_diff),
        ):
            if quality is not None and quality.low > 0.0:
                return None, (
                    f"{best!r} is cheaper, but its {label} is significantly worse than {name!r}'s"
                )
    return best, (
        f"{best!r} is significantly cheaper per session than every other variant, "
        "with quality not significantly worse"
    )
