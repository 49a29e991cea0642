"""Custom analyzers: functions whose output appears in every session report, under their name."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from obsdeco.models import LLMCall, SessionReport

logger = logging.getLogger("obsdeco.analyzers")

Analyzer = Callable[[Sequence[LLMCall], SessionReport], Any]

_analyzers: dict[str, Analyzer] = {}


def register_analyzer(name: str, analyzer: Analyzer) -> None:
    """Add `analyzer(calls, report)` to every session report, as `report.custom[name]`.

    It receives the session's calls (priced: `cost_usd` is set) and the report built so far,
    and returns anything JSON-serialisable (or a pydantic model). Registering a name again
    replaces the analyzer; an analyzer that raises is logged and its entry is left out.
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"analyzer name must be a non-empty string, got {name!r}")
    if not callable(analyzer):
        raise TypeError(f"analyzer {name!r} must be callable")
    _analyzers[name] = analyzer


def unregister_analyzer(name: str) -> None:
    """Remove a custom analyzer (no error if it was not registered)."""
    _analyzers.pop(name, None)


def run_custom_analyzers(report: SessionReport, calls: Sequence[LLMCall]) -> SessionReport:
    if not _analyzers:
        return report
    from obsdeco.analyzers.cost_analyzer import PriceTable
    from obsdeco.analyzers.report import price_calls
    from obsdeco.config import get_settings

    priced = price_calls(calls, PriceTable(get_settings().pricing_overrides))
    for name, analyzer in _analyzers.items():
        try:
            value = analyzer(priced, report)
        except Exception:
            logger.exception("custom analyzer %r failed; left out of the report", name)
            continue
        report.custom[name] = (
            value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        )
    return report
