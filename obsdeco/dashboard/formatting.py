"""How the dashboard writes numbers and counts: thousands separators, singular or plural, whole
milliseconds, dollars with enough decimals for small sums."""

from __future__ import annotations

import re


def count(value: int) -> str:
    """Thousands separators; millions and billions shortened so that a KPI fits its column."""
    for size, unit in ((1_000_000_000, "B"), (1_000_000, "M")):
        if value >= 10 * size:
            return f"{value / size:,.1f} {unit}"
    return f"{value:,}"


def plural(number: int, noun: str, nouns: str | None = None) -> str:
    """`1 session`, `2 sessions`, `1,000 calls` (`nouns` for an irregular plural)."""
    return f"{number:,} {noun if number == 1 else nouns or noun + 's'}"


def usd(value: float) -> str:
    return f"${value:,.4f}" if value < 100 else f"${value:,.2f}"


def ms(value: float | None) -> str:
    """A latency: whole milliseconds, one decimal below 10 ms, `-` when there is none."""
    if value is None:
        return "-"
    return f"{value:.1f} ms" if value < 10 else f"{value:,.0f} ms"


def rounded_ms(value: float | None) -> float | None:
    """A latency for a table: whole milliseconds, one decimal below 10 ms."""
    if value is None:
        return None
    return round(value, 1) if value < 10 else float(round(value))


def share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def file_name(text: str) -> str:
    """`text` reduced to characters that are safe in a downloaded file's name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(".-")[:80] or "session"
