"""Time windows as users write them ("30s", "5m", "1h", "1d", "1w") for budgets and alerts."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_WINDOW = re.compile(r"\s*(\d+)\s*([smhdw])\s*")
_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}
MAX_WINDOW = timedelta(days=3_660)


def parse_window(text: str, what: str = "window") -> timedelta:
    """The duration of a window written as a whole number and a unit: s, m, h, d or w."""
    match = _WINDOW.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f'{what} must be a whole number and a unit (s, m, h, d or w), like "1h" or "1d"; '
            f"got {text!r:.40}"
        )
    duration = timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    if not timedelta(0) < duration <= MAX_WINDOW:
        raise ValueError(f"{what} must be longer than 0 and at most 10 years, got {text!r}")
    return duration


def period_start(moment: datetime, window: timedelta) -> datetime:
    """The start of the fixed window holding `moment`: windows follow one another from the
    Unix epoch, in UTC (a "1d" window is a UTC day)."""
    seconds = int(window.total_seconds())
    start = int(moment.timestamp()) // seconds * seconds
    return datetime.fromtimestamp(start, UTC)
