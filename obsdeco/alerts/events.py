"""`AlertEvent`: an alert that fired or resolved, as stored, listed and sent."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from obsdeco.alerts.rules import Direction, Metric
from obsdeco.models import Name

AlertState = Literal["firing", "resolved"]


class AlertEvent(BaseModel):
    """One transition of an alert: it started firing, or it resolved."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    alert: Name
    """The alert's name."""
    metric: Metric
    state: AlertState
    value: float | None
    """The metric's value in its own units (error_rate and budget as fractions); None when
    there was nothing to measure (no calls in the window)."""
    threshold: float | None
    direction: Direction = "above"
    window: str
    project: Name | None = None
    budget: Name | None = None
    """The budget concerned (metric "budget")."""
    fired_at: AwareDatetime

    @property
    def text(self) -> str:
        """One human line, e.g. "obsdeco alert 'spend' is firing: cost $5.2100 in the last 1h
        (above $5.0000), project support-bot"."""
        if self.metric == "budget":
            what = f"budget {self.budget!r} used {_shown('budget', self.value)}"
            span = ""
        else:
            what = f"{_LABELS[self.metric]} {_shown(self.metric, self.value)}"
            span = f" in the last {self.window}"
        limit = f" ({self.direction} {_shown(self.metric, self.threshold)})"
        scope = f", project {self.project}" if self.project is not None else ""
        return f"obsdeco alert {self.alert!r} {_VERBS[self.state]}: {what}{span}{limit}{scope}"

    def payload(self) -> dict[str, Any]:
        """The notification: JSON-ready, with a Slack-compatible top-level `text` (in which
        `&`, `<` and `>` are escaped as Slack asks, so that names are shown as text)."""
        found: dict[str, Any] = {
            "alert": self.alert,
            "metric": self.metric,
            "value": self.value,
            "threshold": self.threshold,
            "direction": self.direction,
            "state": self.state,
            "text": _slack_escaped(self.text),
            "window": self.window,
            "project": self.project,
            "at": self.fired_at.isoformat(),
        }
        if self.metric == "budget":
            found["budget"] = self.budget
        return found


_VERBS: dict[AlertState, str] = {"firing": "is firing", "resolved": "resolved"}
_LABELS: dict[str, str] = {
    "cost_usd": "cost",
    "error_rate": "error rate",
    "latency_p95_ms": "p95 latency",
    "calls": "calls",
}


def _shown(metric: Metric, value: float | None) -> str:
    """A metric's value as a person reads it."""
    if value is None:
        return "n/a (no calls)" if metric != "budget" else "n/a"
    if metric == "cost_usd":
        return f"${value:,.4f}"
    if metric in ("error_rate", "budget"):
        return f"{value:.1%}"
    if metric == "latency_p95_ms":
        return f"{value:,.0f} ms"
    return f"{value:,.0f}" if value == int(value) else f"{value:,.2f}"


def _slack_escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def shown_value(metric: Metric, value: float | None) -> str:
    """A metric's value as the CLI and the dashboard show it."""
    return _shown(metric, value) if value is not None else "-"
