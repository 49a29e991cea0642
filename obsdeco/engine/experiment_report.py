"""`ExperimentReport`: how the variants of a prompt experiment compare, and its text form."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

MIN_SESSIONS = 5
"""Sessions each variant needs before a winner is judged."""
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2_000
BOOTSTRAP_SEED = 20_240_601
"""Fixed, so that the same records always give the same report."""
RELATIVE_TOLERANCE = 1e-6
"""A cost difference at most this fraction of the costs is rounding, never a win."""


class Difference(BaseModel):
    """A variant's figure minus the best variant's, with a bootstrap confidence interval over
    sessions (`CONFIDENCE`)."""

    value: float
    low: float
    high: float

    @property
    def significant(self) -> bool:
        """Whether the interval excludes 0."""
        return self.low > 0.0 or self.high < 0.0


class VariantStats(BaseModel):
    """One variant's sessions and their calls (those recorded after the assignment)."""

    sessions: int
    calls: int
    errors: int
    cost_per_session_usd: float = Field(description="unpriced calls count as 0")
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    success_rate: float | None = Field(default=None, description="None without calls")
    mean_score: float | None = Field(default=None, description="None without scores")
    scores: int = 0
    cost_per_session_diff: Difference | None = Field(
        default=None, description="against the best variant; None with too few sessions"
    )
    success_rate_diff: Difference | None = None
    mean_score_diff: Difference | None = None


class ExperimentReport(BaseModel):
    """The variants of one experiment compared on cost per session, latency and quality.

    `best` is the variant with the lowest cost per session. `winner` is `best` once every
    variant has `min_sessions` sessions, `best` is significantly cheaper per session than
    every other variant (the interval of the difference excludes 0, and it is more than
    rounding) and its quality (success rate, mean score) is not significantly worse than any
    other's; otherwise None, and `verdict` says why.
    """

    experiment: str
    project: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    variants: dict[str, VariantStats] = Field(default_factory=dict)
    best: str | None = None
    winner: str | None = None
    verdict: str = ""
    min_sessions: int = MIN_SESSIONS
    confidence: float = CONFIDENCE
    unpriced_calls: int = 0

    def __str__(self) -> str:
        return render_experiment(self)


def _usd(value: float) -> str:
    return f"${value:,.6f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _difference(diff: Difference | None, digits: int) -> str:
    """ " (+0.001 vs best, 95% CI +0.0008 .. +0.0012)", or "" without a difference."""
    if diff is None:
        return ""
    return (
        f" ({diff.value:+.{digits}f} vs best, CI {diff.low:+.{digits}f} .. {diff.high:+.{digits}f})"
    )


def render_experiment(report: ExperimentReport) -> str:
    """The report as aligned text."""
    lines = [f"obsdeco experiment report: {report.experiment}"]
    about = [
        ("project", report.project or "all"),
        ("from", report.since.isoformat(timespec="seconds") if report.since else "the beginning"),
        ("to", report.until.isoformat(timespec="seconds") if report.until else "now"),
        ("best (cheapest)", report.best or "-"),
        ("winner", report.winner or "none"),
        ("verdict", report.verdict),
    ]
    if report.unpriced_calls:
        about.append(("unpriced calls", f"{report.unpriced_calls:,} (counted as $0)"))
    lines += _aligned(about)
    for name, stats in report.variants.items():
        rows = [
            ("sessions", f"{stats.sessions:,}"),
            ("calls", f"{stats.calls:,} ({stats.errors:,} failed)"),
            (
                "cost per session",
                _usd(stats.cost_per_session_usd) + _difference(stats.cost_per_session_diff, 6),
            ),
            ("latency p50 / p95", f"{_ms(stats.latency_p50_ms)} / {_ms(stats.latency_p95_ms)}"),
            (
                "success rate",
                _rate(stats.success_rate) + _difference(stats.success_rate_diff, 4),
            ),
            (
                "mean score",
                _score(stats.mean_score)
                + (f" of {stats.scores:,}" if stats.scores else "")
                + _difference(stats.mean_score_diff, 4),
            ),
        ]
        lines += ["", f"Variant {name}", *_aligned(rows)]
    if report.variants:
        lines += [
            "",
            f"Differences are against the best variant, with {report.confidence:.0%} "
            "bootstrap intervals over sessions.",
        ]
    return "\n".join(lines)


def _aligned(rows: list[tuple[str, str]]) -> list[str]:
    width = max(len(label) for label, _ in rows)
    return [f"  {label.ljust(width)}  {value}".rstrip() for label, value in rows]
