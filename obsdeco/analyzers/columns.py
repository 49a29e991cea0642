"""Calls as numpy columns: the shape every analyzer works on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from obsdeco.models import LLMCall

NONE_KEY = "(none)"

FloatArray = npt.NDArray[np.float64]
ObjectArray = npt.NDArray[np.object_]
BoolArray = npt.NDArray[np.bool_]


def _counts(values: list[int | None]) -> FloatArray:
    """Token counts as floats, an unknown count as NaN."""
    return np.array([np.nan if value is None else value for value in values], dtype=np.float64)


@dataclass(frozen=True, slots=True)
class CallColumns:
    """One array per field; token arrays hold NaN where the provider did not report a count."""

    size: int
    provider: ObjectArray
    model: ObjectArray
    requested_model: ObjectArray
    agent: ObjectArray
    operation: ObjectArray
    prompt_tokens: FloatArray
    completion_tokens: FloatArray
    cached_tokens: FloatArray
    cache_creation_tokens: FloatArray
    reasoning_tokens: FloatArray
    latency_ms: FloatArray
    time_to_first_token_ms: FloatArray
    success: BoolArray
    error_type: ObjectArray

    @classmethod
    def from_calls(cls, calls: Sequence[LLMCall]) -> CallColumns:
        fields = [call.__dict__ for call in calls]
        return cls(
            size=len(fields),
            provider=np.array([f["provider"].value for f in fields], dtype=object),
            model=np.array([f["response_model"] or f["model"] for f in fields], dtype=object),
            requested_model=np.array([f["model"] for f in fields], dtype=object),
            agent=np.array([f["agent_name"] or NONE_KEY for f in fields], dtype=object),
            operation=np.array([f["operation"] or NONE_KEY for f in fields], dtype=object),
            prompt_tokens=_counts([f["prompt_tokens"] for f in fields]),
            completion_tokens=_counts([f["completion_tokens"] for f in fields]),
            cached_tokens=_counts([f["cached_tokens"] for f in fields]),
            cache_creation_tokens=_counts([f["cache_creation_tokens"] for f in fields]),
            reasoning_tokens=_counts([f["reasoning_tokens"] for f in fields]),
            latency_ms=np.array([f["latency_ms"] for f in fields], dtype=np.float64),
            time_to_first_token_ms=_counts([f["time_to_first_token_ms"] for f in fields]),
            success=np.array([f["success"] for f in fields], dtype=bool),
            error_type=np.array([f["error_type"] or "other" for f in fields], dtype=object),
        )

    @property
    def total_tokens(self) -> FloatArray:
        """prompt + completion per call; NaN only when both are unknown."""
        both_unknown = np.isnan(self.prompt_tokens) & np.isnan(self.completion_tokens)
        total = np.nan_to_num(self.prompt_tokens) + np.nan_to_num(self.completion_tokens)
        return np.where(both_unknown, np.nan, total)

    @property
    def tokens_unknown(self) -> BoolArray:
        """Calls where the provider did not report prompt or completion tokens."""
        return np.isnan(self.prompt_tokens) | np.isnan(self.completion_tokens)


def group_sums(keys: ObjectArray, values: FloatArray) -> dict[str, float]:
    """Sum `values` per distinct key (NaN values add nothing), keys in sorted order."""
    if keys.size == 0:
        return {}
    names, inverse = np.unique(keys.astype(str), return_inverse=True)
    sums = np.bincount(inverse, weights=np.nan_to_num(values), minlength=names.size)
    return {str(name): float(total) for name, total in zip(names, sums, strict=True)}


def group_counts(keys: ObjectArray) -> dict[str, int]:
    """How many entries each distinct key has, keys in sorted order."""
    if keys.size == 0:
        return {}
    names, counts = np.unique(keys.astype(str), return_counts=True)
    return {str(name): int(count) for name, count in zip(names, counts, strict=True)}
