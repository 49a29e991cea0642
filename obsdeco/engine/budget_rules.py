"""`Budget`: a hard cap on what LLM calls may spend, and `BudgetExceeded`, the refusal."""

from __future__ import annotations

import math
from datetime import timedelta
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from obsdeco.models import Name
from obsdeco.windows import parse_window

BudgetScope = Literal["session", "agent", "project"]


class Budget(BaseModel):
    """At most `limit_usd` for the calls of each session, agent or project (`scope`).

    With `window` ("1h", "1d", ...) the limit holds in each fixed window, aligned on UTC (a "1d"
    window is a UTC day). `agent` or `project` narrow the budget to one agent or one project;
    without them every agent (every project) has a budget of its own. Passing `soft_usd` logs a
    WARNING (and fires a `budget` alert) without refusing.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    limit_usd: float = Field(gt=0, allow_inf_nan=False)
    scope: BudgetScope = "project"
    window: str | None = None
    soft_usd: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    name: Name | None = None
    agent: Name | None = None
    project: Name | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Budget:
        if self.window is not None:
            parse_window(self.window, "Budget window")
        if self.soft_usd is not None and self.soft_usd > self.limit_usd:
            raise ValueError(
                f"Budget soft_usd ({self.soft_usd}) must not exceed limit_usd ({self.limit_usd})"
            )
        if self.agent is not None and self.scope != "agent":
            raise ValueError('Budget agent= narrows a budget of scope="agent" only')
        if self.project is not None and self.scope != "project":
            raise ValueError('Budget project= narrows a budget of scope="project" only')
        return self

    @cached_property
    def period(self) -> timedelta | None:
        return None if self.window is None else parse_window(self.window)

    @cached_property
    def label(self) -> str:
        """The budget's name, else one made of its scope, limit and window."""
        if self.name is not None:
            return self.name
        narrowed = self.agent or self.project
        scope = f"{self.scope} {narrowed}" if narrowed else self.scope
        window = f" per {self.window}" if self.window else ""
        return f"{scope} ${self.limit_usd:g}{window}"


def checked_budget_usd(value: object) -> float:
    """A session's `budget_usd`: a positive, finite number of dollars."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"budget_usd must be a number of US dollars, got {value!r:.80}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"budget_usd must be a positive, finite number of dollars, got {value!r}")
    return float(value)


class BudgetExceeded(Exception):
    """A call was refused before it was sent: it could pass a budget's limit.

    `spent_usd` is what the budget's calls have cost so far, `reserved_usd` what the other
    calls in flight hold, `estimate_usd` this call's worst case.
    """

    def __init__(
        self,
        budget: str,
        scope: BudgetScope,
        limit_usd: float,
        spent_usd: float,
        reserved_usd: float,
        estimate_usd: float,
    ) -> None:
        self.budget = budget
        self.scope = scope
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd
        self.reserved_usd = reserved_usd
        self.estimate_usd = estimate_usd
        super().__init__(
            f"obsdeco budget {budget!r} would be passed: limit ${limit_usd:.6f}, spent "
            f"${spent_usd:.6f}, reserved by calls in flight ${reserved_usd:.6f}, this call "
            f"up to ${estimate_usd:.6f}; the call was not sent"
        )

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return type(self), (
            self.budget,
            self.scope,
            self.limit_usd,
            self.spent_usd,
            self.reserved_usd,
            self.estimate_usd,
        )
