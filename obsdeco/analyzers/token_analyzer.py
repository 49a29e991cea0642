"""Token sums: prompt vs completion, cached and reasoning, by model, agent, provider, operation."""

from __future__ import annotations

import numpy as np

from obsdeco.analyzers.columns import BoolArray, CallColumns
from obsdeco.models import OperationTokens, TokenBreakdown, TokenCounts

_TOP_OPERATIONS = 5


def _sum(values: np.ndarray, rows: BoolArray) -> int:
    return int(np.nansum(values[rows]))


def token_counts(columns: CallColumns, rows: BoolArray | None = None) -> TokenCounts:
    """Sums over the selected calls; unknown counts add nothing and are counted apart."""
    if rows is None:
        rows = np.ones(columns.size, dtype=bool)
    prompt = _sum(columns.prompt_tokens, rows)
    completion = _sum(columns.completion_tokens, rows)
    return TokenCounts(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=_sum(columns.cached_tokens, rows),
        cache_creation_tokens=_sum(columns.cache_creation_tokens, rows),
        reasoning_tokens=_sum(columns.reasoning_tokens, rows),
        total_tokens=prompt + completion,
        calls=int(np.count_nonzero(rows)),
        unknown_calls=int(np.count_nonzero(columns.tokens_unknown[rows])),
    )


def _by(columns: CallColumns, column: str) -> dict[str, TokenCounts]:
    if not columns.size:
        return {}
    return {name: token_counts(columns, rows) for name, rows in columns.groups(column).members()}


def heaviest_operations(by_operation: dict[str, TokenCounts]) -> list[OperationTokens]:
    """Operations ranked by total tokens, the heaviest first."""
    ranked = sorted(
        (
            OperationTokens(
                operation=name,
                calls=counts.calls,
                total_tokens=counts.total_tokens,
                tokens_per_call=counts.total_tokens / counts.calls,
            )
            for name, counts in by_operation.items()
        ),
        key=lambda item: (-item.total_tokens, item.operation),
    )
    return ranked[:_TOP_OPERATIONS]


def analyze_tokens(columns: CallColumns) -> TokenBreakdown:
    totals = token_counts(columns)
    return TokenBreakdown(
        prompt_tokens=totals.prompt_tokens,
        completion_tokens=totals.completion_tokens,
        cached_tokens=totals.cached_tokens,
        cache_creation_tokens=totals.cache_creation_tokens,
        reasoning_tokens=totals.reasoning_tokens,
        total_tokens=totals.total_tokens,
        calls_with_unknown_tokens=totals.unknown_calls,
        by_model=_by(columns, "model"),
        by_agent=_by(columns, "agent"),
        by_provider=_by(columns, "provider_name"),
        heaviest_operations=heaviest_operations(_by(columns, "operation")),
    )
