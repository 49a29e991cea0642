"""The OTLP exports of this process: opened for the settings that name an endpoint, counted in
`obsdeco.stats()`, flushed on request and finished at exit.

Importing this module does not import OpenTelemetry; the exporter is loaded only when an
endpoint is configured (it needs `pip install 'obsdeco[otel]'`).
"""

from __future__ import annotations

import importlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

from obsdeco.analyzers import PriceTable
from obsdeco.config import Settings
from obsdeco.guard import fault
from obsdeco.writer import CommitListener


@dataclass
class ExportCounters:
    """Process-wide counts of the OTLP export."""

    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    exported_spans: int = 0
    export_failed: int = 0
    """Spans the endpoint did not accept (unreachable, refused, timed out)."""
    export_metrics_failed: int = 0
    """Metric exports (each all the metrics of one moment) the endpoint did not accept."""
    export_dropped: int = 0
    """Records never exported: more were waiting than the exporter holds."""
    last_error: str | None = None

    def add(self, name: str, amount: int) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + amount)

    def reset(self) -> None:
        self.lock = threading.Lock()
        self.exported_spans = self.export_failed = self.export_dropped = 0
        self.export_metrics_failed = 0
        self.last_error = None


class LiveExport(CommitListener, Protocol):
    def flush(self, timeout: float | None) -> bool:
        """Wait until what was committed so far is exported (or failed); False on timeout."""
        ...

    def wait_closed(self, timeout: float | None) -> bool:
        """Wait until the export has finished after `closed()`; False on timeout."""
        ...


counters = ExportCounters()
_lock = threading.Lock()
_live: list[LiveExport] = []
_IMPORTED_KEPT = 100_000
_imported: OrderedDict[str, None] = OrderedDict()
"""Sessions made from other instrumentations' spans (`obsdeco.otel.SpanExporter`): already in
OpenTelemetry, so never exported again."""


def note_imported(session_id: str) -> None:
    with _lock:
        _imported[session_id] = None
        while len(_imported) > _IMPORTED_KEPT:
            _imported.popitem(last=False)


def is_imported(session_id: str) -> bool:
    return session_id in _imported


def open_export(settings: Settings, prices: PriceTable) -> LiveExport | None:
    """The OTLP export of these settings, None when they name no endpoint."""
    if settings.otlp_endpoint is None:
        return None
    try:
        otlp = importlib.import_module("obsdeco.otlp.exporter")
        export: LiveExport = otlp.OtlpExport(settings, prices, counters)
    except Exception:
        fault("open_export")
        return None
    with _lock:
        _live.append(export)
    return export


def forget(export: LiveExport) -> None:
    """Called by an export once it has finished."""
    with _lock:
        if export in _live:
            _live.remove(export)


def live_exports() -> list[LiveExport]:
    with _lock:
        return list(_live)


def flush_exports(timeout: float | None = None) -> bool:
    """Wait until every export has sent what was committed so far; False on timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for export in live_exports():
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not export.flush(remaining):
            return False
    return True


def wait_exports_closed(timeout: float) -> bool:
    """At exit, after the writers ended: wait for the exports to finish sending."""
    deadline = time.monotonic() + timeout
    for export in live_exports():
        if not export.wait_closed(max(0.0, deadline - time.monotonic())):
            return False
    return True


def reset_after_fork() -> None:
    """A forked child has none of its parent's exporter threads."""
    global _lock
    _lock = threading.Lock()
    _live.clear()
    counters.reset()
