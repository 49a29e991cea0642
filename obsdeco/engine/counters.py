"""What the engine counts for `obsdeco.stats()`, kept apart so that the runtime can read it
without importing the engine (which is built on the runtime)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class EngineCounters:
    routes_stopped: int = 0
    """Route rules stopped by their quality guard."""


engine_counters = EngineCounters()
