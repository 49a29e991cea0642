"""Do no harm: obsdeco's own code, run inside a user's function or LLM call, never raises there.

Every such piece goes through `guarded` (a decorator) or `safely` (one action). A fault is
counted (`obsdeco.stats().internal_faults`), logged with its traceback the first time it
happens at its place, and swallowed; the user's code sees only its own results and exceptions.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

logger = logging.getLogger("obsdeco")

P = ParamSpec("P")
R = TypeVar("R")


class _Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._places: set[str] = set()
        self.count = 0

    def note(self, place: str) -> None:
        """Count the exception being handled; log it the first time one happens at `place`."""
        with self._lock:
            self.count += 1
            first = place not in self._places
            self._places.add(place)
        if first:
            logger.exception(
                "obsdeco fault in %s (ignored; your code is unaffected; later faults here are "
                "counted in obsdeco.stats().internal_faults, not logged)",
                place,
            )


faults = _Faults()


def fault(place: str) -> None:
    """Note the exception being handled as an obsdeco fault at `place` (call in `except`)."""
    faults.note(place)


def internal_faults() -> int:
    """How many obsdeco faults were swallowed in this process."""
    return faults.count


def guarded(default: Any = None) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run a function so that an exception in it is noted and `default` returned instead."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        place = function.__qualname__

        @wraps(function)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return function(*args, **kwargs)
            except Exception:
                faults.note(place)
                return default  # type: ignore[no-any-return]

        return run

    return decorate


def safely(place: str, action: Callable[[], R]) -> R | None:
    """`action()`, or None when it raised (the fault noted at `place`)."""
    try:
        return action()
    except Exception:
        faults.note(place)
        return None
