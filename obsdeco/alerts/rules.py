"""`Alert`: a rule on a metric over a trailing window, with a threshold and a notifier."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from obsdeco.models import Name
from obsdeco.windows import parse_window

Metric = Literal["cost_usd", "error_rate", "latency_p95_ms", "calls", "budget"]
"""cost_usd: USD spent in the window; error_rate: failed calls / calls (a fraction, 0-1);
latency_p95_ms: the 95th percentile latency; calls: the number of calls; budget: the fraction
of a budget used (spent / limit)."""

Direction = Literal["above", "below"]

Notifier = Callable[[Mapping[str, Any]], object]
"""A callable notifier: called with the notification (a mapping, see `AlertEvent.payload`)."""

LOG = "log"


class Alert(BaseModel):
    """A rule: notify when `metric` over the trailing `window` goes above `above` (or below
    `below`), once when it crosses and once when it resolves.

    `notify` is an http(s) URL (the notification is POSTed as JSON, Slack-compatible), a
    callable receiving the notification as a mapping, or "log" (a WARNING from the
    `obsdeco.alerts` logger). `project` narrows the calls to one project (None: every project
    in the store). For metric "budget", `budget` names the budget watched (None: any) and
    `above` is a fraction of its limit; without `above` the budget's own `soft_usd` is the
    threshold. `window` does not apply to budgets (they have their own).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)
    """Inputs are left out of errors: a webhook URL carries its secret."""

    name: Name
    metric: Metric
    window: str = "1h"
    above: float | None = None
    below: float | None = None
    notify: str | Notifier = LOG
    project: Name | None = None
    budget: Name | None = None

    @field_validator("window", mode="before")
    @classmethod
    def _known_window(cls, value: object) -> str:
        parse_window(value)  # type: ignore[arg-type]
        return str(value).strip()

    @field_validator("notify", mode="before")
    @classmethod
    def _usable_notifier(cls, value: object) -> object:
        if callable(value) or value == LOG:
            return value
        if isinstance(value, str) and _is_web_url(value):
            return value
        shown = _redacted(value) if isinstance(value, str) else type(value).__name__
        raise ValueError(
            "notify must be an http(s) URL (e.g. 'https://hooks.slack.com/services/...'), "
            f"a callable, or {LOG!r}; got {shown!r}"
        )

    @field_validator("above", "below")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and (not math.isfinite(value) or value < 0):
            raise ValueError(f"a threshold must be a finite number >= 0, got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_threshold(self) -> Alert:
        given = [side for side in ("above", "below") if getattr(self, side) is not None]
        if self.metric == "budget":
            if self.below is not None:
                raise ValueError(
                    "metric 'budget' takes only 'above' (a fraction of the limit) or neither "
                    "(the budget's soft_usd)"
                )
        elif len(given) != 1:
            raise ValueError(
                f"alert {self.name!r} needs exactly one of 'above' and 'below' "
                f"(got {' and '.join(given) or 'neither'})"
            )
        if self.budget is not None and self.metric != "budget":
            raise ValueError("'budget' applies only to metric 'budget'")
        for side in given:
            threshold = getattr(self, side)
            if self.metric == "error_rate" and threshold > 1:
                raise ValueError(
                    f"metric 'error_rate' is a fraction (0-1); {side}={threshold!r} is more "
                    "than 1 (write 0.05 for 5%)"
                )
        return self

    @property
    def duration(self) -> timedelta:
        """The window as a duration."""
        return parse_window(self.window)

    @property
    def direction(self) -> Direction:
        return "below" if self.below is not None else "above"

    @property
    def threshold(self) -> float | None:
        """The threshold the rule gives (None: a budget rule using the budget's soft limit)."""
        return self.below if self.below is not None else self.above

    @property
    def destination(self) -> str:
        """Where notifications go, fit for a log line (a URL without its path and query:
        webhook URLs often carry their secret there)."""
        if isinstance(self.notify, str):
            return self.notify if self.notify == LOG else _redacted(self.notify)
        return f"callable {getattr(self.notify, '__qualname__', type(self.notify).__name__)}"


def _is_web_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _redacted(url: str) -> str:
    """`url` without credentials, path and query (webhook URLs carry secrets there)."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return url.partition("://")[0] + "://..."
    if not parts.scheme or not parts.hostname:
        return url[:12] + ("..." if len(url) > 12 else "")
    return f"{parts.scheme}://{parts.hostname}{port}"
