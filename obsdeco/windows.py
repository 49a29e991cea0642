"""Time windows written as text ("30s", "5m", "1h", "1d", "1w"), shared by alerts and budgets."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_WINDOW = re.compile(r"([0-9]{1,6})([smhdw])")
MAX_WINDOW = timedelta(days=3_660)
"""About ten years: longer windows are surely a typo."""


def parse_window(text: str) -> timedelta:
    """The duration a window such as "5m", "1h" or "1d" names: a whole number followed by one
    unit, s (seconds), m (minutes), h (hours), d (days) or w (weeks); ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError(
            f"window must be text such as '5m', '1h' or '1d', got {type(text).__name__}"
        )
    match = _WINDOW.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"window {text!r:.40} is not a duration: use a whole number and one unit, "
            "s, m, h, d or w (e.g. '5m', '1h', '1d')"
        )
    amount, unit = int(match.group(1)), match.group(2)
    if amount == 0:
        raise ValueError(f"window {text!r} is empty: it must be longer than 0")
    duration = timedelta(**{_UNITS[unit]: amount})
    if duration > MAX_WINDOW:
        raise ValueError(f"window {text!r} is longer than {MAX_WINDOW.days:,} days")
    return duration
