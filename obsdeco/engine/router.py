"""The model router: which rule, if any, routes a request, and each rule's quality guard.

`Router.decide` runs on the caller's thread before a request is sent, so it only reads the
request body it is given (no parsing, no I/O). Each rule keeps the quality of its last
`QUALITY_WINDOW` routed calls: a failed call is 0, a successful one the mean of its scores (1
while it has none). When that mean falls below the rule's `min_quality`, the rule stops
routing for the rest of the process (until `configure()` gives new rules), logged once and
counted in `obsdeco.stats().routes_stopped`.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from obsdeco.engine.counters import engine_counters
from obsdeco.engine.request_size import prompt_characters
from obsdeco.engine.routes import CHARS_PER_TOKEN, QUALITY_WINDOW, Route
from obsdeco.engine.scores import add_score_listener
from obsdeco.guard import fault
from obsdeco.models import Score

logger = logging.getLogger("obsdeco.router")

_TOOL_KEYS = ("tools", "functions", "toolConfig")


def estimated_prompt_tokens(body: Mapping[str, Any]) -> int:
    """A request's prompt size in tokens, estimated from its text (`CHARS_PER_TOKEN`)."""
    return math.ceil(prompt_characters(body) / CHARS_PER_TOKEN)


def _has_tools(body: Mapping[str, Any]) -> bool:
    return any(body.get(key) for key in _TOOL_KEYS)


@dataclass(slots=True)
class _Outcome:
    """One routed call as the guard sees it."""

    success: bool
    scores: list[float] = field(default_factory=list)

    @property
    def quality(self) -> float:
        if not self.success:
            return 0.0
        return sum(self.scores) / len(self.scores) if self.scores else 1.0


class RuleState:
    """One rule and what its routed calls have shown so far."""

    def __init__(self, route: Route) -> None:
        self.route = route
        self.stopped = False
        self._lock = threading.Lock()
        self._window: deque[tuple[str, _Outcome]] = deque()
        self._by_call: dict[str, _Outcome] = {}

    def matches(self, body: Mapping[str, Any]) -> bool:
        """Whether every condition of the rule holds for this request."""
        route = self.route
        if route.tools is not None and _has_tools(body) is not route.tools:
            return False
        if (
            route.max_prompt_tokens is not None
            and estimated_prompt_tokens(body) > route.max_prompt_tokens
        ):
            return False
        if route.when is not None:
            try:
                return bool(route.when(body))
            except Exception:
                fault(f"Route.when of {route.from_model} -> {route.to_model}")
                return False
        return True

    def observe(self, call_id: str, success: bool) -> None:
        """A routed call ended."""
        outcome = _Outcome(success)
        with self._lock:
            self._window.append((call_id, outcome))
            self._by_call[call_id] = outcome
            if len(self._window) > QUALITY_WINDOW:
                old_id, _ = self._window.popleft()
                self._by_call.pop(old_id, None)
            self._judge()

    def score(self, call_id: str, value: float) -> bool:
        """A score arrived for a call; True if it is one of this rule's judged calls."""
        with self._lock:
            outcome = self._by_call.get(call_id)
            if outcome is None:
                return False
            outcome.scores.append(value)
            self._judge()
            return True

    @property
    def quality(self) -> float | None:
        """The mean quality of the judged calls (None before the first)."""
        with self._lock:
            return self._quality()

    def _quality(self) -> float | None:
        if not self._window:
            return None
        return sum(outcome.quality for _, outcome in self._window) / len(self._window)

    def _judge(self) -> None:
        quality = self._quality()
        if self.stopped or quality is None or quality >= self.route.min_quality:
            return
        self.stopped = True
        engine_counters.add("routes_stopped")
        logger.warning(
            "obsdeco route %s -> %s stopped routing: the quality of its last %d routed calls "
            "is %.3f, below its min_quality %.3f; requests for %s now go unchanged",
            self.route.from_model,
            self.route.to_model,
            len(self._window),
            quality,
            self.route.min_quality,
            self.route.from_model,
        )


class Router:
    """The rules of one configuration, with their guards."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)
        self.rules = [RuleState(route) for route in routes]
        self._by_model: dict[str, list[RuleState]] = {}
        for rule in self.rules:
            self._by_model.setdefault(rule.route.from_model, []).append(rule)

    def decide(self, model: Any, body: Mapping[str, Any]) -> RuleState | None:
        """The first rule that routes (or, in shadow mode, would route) this request."""
        candidates = self._by_model.get(model) if type(model) is str else None
        if not candidates:
            return None
        for rule in candidates:
            if not rule.stopped and rule.matches(body):
                return rule
        return None

    def score(self, call_id: str, value: float) -> None:
        """Tell the guards a call's score (only a rule that routed the call keeps it)."""
        for rule in self.rules:
            if rule.score(call_id, value):
                return


_lock = threading.Lock()
_current: Router | None = None


def router_for(routes: tuple[Route, ...]) -> Router | None:
    """The router of these rules (one per configuration, its guards' memory kept while the
    rules are the same); None without rules."""
    global _current
    if not routes:
        return None
    current = _current
    if current is not None and current.routes is routes:
        return current
    with _lock:
        if _current is None or _current.routes is not routes:
            _current = Router(routes)
        return _current


def _learn_score(score: Score) -> None:
    """A score on a call a rule routed counts in that rule's quality."""
    router = _current
    if router is not None and score.call_id is not None:
        router.score(score.call_id, score.value)


add_score_listener(_learn_score)
