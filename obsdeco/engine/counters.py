"""What the engine counts for `obsdeco.stats()`, kept apart so that the runtime can read it
without importing the engine (which is built on the runtime)."""

from __future__ import annotations

import threading
from typing import Literal, NamedTuple

EngineEvent = Literal[
    "routes_stopped", "budget_refusals", "budget_unestimated", "budget_unreachable"
]


class EngineCounts(NamedTuple):
    routes_stopped: int
    """Route rules stopped by their quality guard."""
    budget_refusals: int
    """Calls refused by a budget."""
    budget_unestimated: int
    """Calls let through outside every budget: their worst case could not be known."""
    budget_unreachable: int
    """Calls let through because their project budget's accounts could not be reached."""


class EngineCounters:
    """The engine's counts in this process, read together."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(EngineCounts._fields, 0)

    def add(self, event: EngineEvent) -> None:
        with self._lock:
            self._counts[event] += 1

    def snapshot(self) -> EngineCounts:
        with self._lock:
            return EngineCounts(**self._counts)


engine_counters = EngineCounters()
