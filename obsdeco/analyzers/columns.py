"""Calls as numpy columns: the shape every analyzer works on."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

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


class CallColumns:
    """One array per field, built on first use; token arrays hold NaN for unreported counts."""

    def __init__(self, calls: Sequence[LLMCall]) -> None:
        self._fields = [call.__dict__ for call in calls]
        self.size = len(self._fields)

    def _objects(self, name: str) -> ObjectArray:
        return np.array([f[name] for f in self._fields], dtype=object)

    def _named(self, name: str) -> ObjectArray:
        return np.array([f[name] or NONE_KEY for f in self._fields], dtype=object)

    def _counts(self, name: str) -> FloatArray:
        return _counts([f[name] for f in self._fields])

    @cached_property
    def provider(self) -> ObjectArray:
        return np.array([f["provider"].value for f in self._fields], dtype=object)

    @cached_property
    def model(self) -> ObjectArray:
        """The returned model, else the requested one (the key reports group by)."""
        return np.array([f["response_model"] or f["model"] for f in self._fields], dtype=object)

    @cached_property
    def requested_model(self) -> ObjectArray:
        return self._objects("model")

    @cached_property
    def agent(self) -> ObjectArray:
        return self._named("agent_name")

    @cached_property
    def operation(self) -> ObjectArray:
        return self._named("operation")

    @cached_property
    def prompt_tokens(self) -> FloatArray:
        return self._counts("prompt_tokens")

    @cached_property
    def completion_tokens(self) -> FloatArray:
        return self._counts("completion_tokens")

    @cached_property
    def cached_tokens(self) -> FloatArray:
        return self._counts("cached_tokens")

    @cached_property
    def cache_creation_tokens(self) -> FloatArray:
        return self._counts("cache_creation_tokens")

    @cached_property
    def reasoning_tokens(self) -> FloatArray:
        return self._counts("reasoning_tokens")

    @cached_property
    def latency_ms(self) -> FloatArray:
        return np.array([f["latency_ms"] for f in self._fields], dtype=np.float64)

    @cached_property
    def time_to_first_token_ms(self) -> FloatArray:
        return self._counts("time_to_first_token_ms")

    @cached_property
    def success(self) -> BoolArray:
        return np.array([f["success"] for f in self._fields], dtype=bool)

    @cached_property
    def error_type(self) -> ObjectArray:
        return np.array([f["error_type"] or "other" for f in self._fields], dtype=object)

    @cached_property
    def total_tokens(self) -> FloatArray:
        """prompt + completion per call; NaN only when both are unknown."""
        both_unknown = np.isnan(self.prompt_tokens) & np.isnan(self.completion_tokens)
        total = np.nan_to_num(self.prompt_tokens) + np.nan_to_num(self.completion_tokens)
        return np.where(both_unknown, np.nan, total)

    @cached_property
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
