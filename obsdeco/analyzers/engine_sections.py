"""The reports' `cache` and `routing` sections, summed from groups of calls.

A session report feeds its calls one by one, a project report its aggregate rows; both go
through `EngineTally`, so that they count hits, routed calls and savings the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from obsdeco.models import CacheSummary, RouteRuleSummary, RoutingSummary


def rule_name(from_model: str, to_model: str) -> str:
    """How `RoutingSummary.by_rule` names a rule."""
    return f"{from_model} -> {to_model}"


def usd_or_zero(value: float | None) -> float:
    """A saving that could not be priced adds nothing (as unpriced costs do)."""
    return 0.0 if value is None or math.isnan(value) else value


@dataclass(slots=True)
class _Rule:
    routed_calls: int = 0
    routed_failed: int = 0
    saved_usd: float = 0.0
    shadow_calls: int = 0
    shadow_failed: int = 0
    shadow_saved_usd: float = 0.0

    def summary(self) -> RouteRuleSummary:
        return RouteRuleSummary(
            routed_calls=self.routed_calls,
            saved_usd=self.saved_usd,
            shadow_calls=self.shadow_calls,
            shadow_saved_usd=self.shadow_saved_usd,
            success_rate=_success_rate(self.routed_calls, self.routed_failed),
            shadow_success_rate=_success_rate(self.shadow_calls, self.shadow_failed),
        )


def _success_rate(calls: int, failed: int) -> float | None:
    return 1.0 - failed / calls if calls else None


@dataclass(slots=True)
class EngineTally:
    """Hits, misses, routed and shadow calls and their savings, added group by group."""

    hits: int = 0
    misses: int = 0
    cache_saved_usd: float = 0.0
    routed: _Rule = field(default_factory=_Rule)
    unrouted_calls: int = 0
    unrouted_failed: int = 0
    rules: dict[str, _Rule] = field(default_factory=dict)

    def add(
        self,
        *,
        calls: int,
        errors: int,
        model: str,
        cache_hit: bool | None,
        routed_from: str | None,
        shadow_model: str | None,
        cache_saved: float | None,
        routing_saved: float | None,
        shadow_saved: float | None,
    ) -> None:
        """Add `calls` calls that share these facts; `model` is the model they called, the
        savings are the group's sums (None or NaN: unpriced)."""
        if cache_hit is True:
            self.hits += calls
            self.cache_saved_usd += usd_or_zero(cache_saved)
        elif cache_hit is False:
            self.misses += calls
        if routed_from is not None:
            rule = self.rules.setdefault(rule_name(routed_from, model), _Rule())
            for counted in (self.routed, rule):
                counted.routed_calls += calls
                counted.routed_failed += errors
                counted.saved_usd += usd_or_zero(routing_saved)
            return
        self.unrouted_calls += calls
        self.unrouted_failed += errors
        if shadow_model is not None:
            rule = self.rules.setdefault(rule_name(model, shadow_model), _Rule())
            rule.shadow_calls += calls
            rule.shadow_failed += errors
            rule.shadow_saved_usd += usd_or_zero(shadow_saved)

    def cache(self) -> CacheSummary:
        asked = self.hits + self.misses
        return CacheSummary(
            hits=self.hits,
            misses=self.misses,
            saved_usd=self.cache_saved_usd,
            hit_rate=self.hits / asked if asked else None,
        )

    def routing(self) -> RoutingSummary:
        routed = self.routed
        rules = {name: rule.summary() for name, rule in sorted(self.rules.items())}
        return RoutingSummary(
            routed_calls=routed.routed_calls,
            saved_usd=routed.saved_usd,
            shadow_calls=sum(rule.shadow_calls for rule in rules.values()),
            shadow_saved_usd=sum(rule.shadow_saved_usd for rule in rules.values()),
            routed_success_rate=_success_rate(routed.routed_calls, routed.routed_failed),
            unrouted_success_rate=_success_rate(self.unrouted_calls, self.unrouted_failed),
            by_rule=rules,
        )
