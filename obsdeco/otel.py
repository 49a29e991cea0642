"""OpenTelemetry: obsdeco's side of it (needs `pip install 'obsdeco[otel]'`).

- `SpanExporter`: add it to your own `TracerProvider` to turn the GenAI spans of other
  instrumentations (OpenInference, OpenLLMetry, Logfire, pydantic-ai, ...) into obsdeco calls
  and sessions.
- `flush_export()`: wait until what obsdeco stored so far is exported to `otlp_endpoint`.
"""

from __future__ import annotations

import time

from obsdeco.otlp.otel_import import SpanExporter
from obsdeco.otlp.registry import flush_exports
from obsdeco.runtime import flush


def flush_export(timeout: float | None = None) -> bool:
    """Store every record made so far, then wait until the OTLP export has sent (or failed to
    send) all of it that is due: calls and agent spans of ended sessions and of no session,
    and the metrics so far. False if `timeout` (s) ran out first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    if not flush(timeout):
        return False
    return flush_exports(None if deadline is None else max(0.0, deadline - time.monotonic()))


__all__ = ["SpanExporter", "flush_export"]
