"""Success rate and errors by type and by model."""

from __future__ import annotations

import numpy as np

from obsdeco.analyzers.columns import CallColumns
from obsdeco.models import QualityBreakdown


def analyze_quality(columns: CallColumns) -> QualityBreakdown:
    failed = ~columns.success
    errors = int(failed.sum())
    totals = columns.total_tokens
    known = totals[~np.isnan(totals)]
    return QualityBreakdown(
        calls=columns.size,
        errors=errors,
        retries=int(columns.retries.sum()) if columns.size else 0,
        rate_limited_retries=int(columns.rate_limited_retries.sum()) if columns.size else 0,
        success_rate=1.0 - errors / columns.size if columns.size else 1.0,
        errors_by_type=columns.groups("error_type").counts(failed) if errors else {},
        errors_by_model=columns.groups("model").counts(failed) if errors else {},
        avg_tokens_per_call=float(known.mean()) if known.size else None,
    )
