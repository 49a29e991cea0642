"""`Route`: one rule of the model router, and the measurable tests of a "simple" request."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from obsdeco.models import Name

RequestPredicate = Callable[[Mapping[str, Any]], bool]
"""Told the request's JSON body (as the SDK or client sends it): route it?"""

CHARS_PER_TOKEN = 4
"""The prompt-size estimate: about four characters of text a token (English, GPT and Claude)."""

QUALITY_WINDOW = 20
"""A rule's quality guard judges its last this many routed calls."""


class Route(BaseModel):
    """Send requests for `from_model` to `to_model` when they are simple enough.

    A request is routed when every condition given holds: its prompt is at most
    `max_prompt_tokens` (estimated from its text, `CHARS_PER_TOKEN` characters a token), it
    has tools or not as `tools` says, and `when(body)` is true. With `shadow=True` nothing is
    changed: the call is recorded with the model it would have gone to. The rule stops routing
    when the quality of its last `QUALITY_WINDOW` routed calls (success, and the mean of their
    scores) falls below `min_quality`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    from_model: Name
    to_model: Name
    max_prompt_tokens: int | None = Field(default=None, ge=0)
    tools: bool | None = None
    """False: only requests without tools; True: only requests with tools; None: either."""
    when: RequestPredicate | None = None
    min_quality: float = Field(default=0.9, ge=0.0, le=1.0, allow_inf_nan=False)
    shadow: bool = False

    @model_validator(mode="after")
    def _two_models(self) -> Route:
        if self.from_model == self.to_model:
            raise ValueError(f"Route from_model and to_model are both {self.from_model!r}")
        return self
