"""obsdeco: watch AI agents in production.

Everything public is importable from here; see the README for the guide.
"""

import importlib
from types import ModuleType

from obsdeco._version import __version__
from obsdeco.aio import aflush, aget_calls, aget_report, areport
from obsdeco.alerts.events import AlertEvent
from obsdeco.alerts.rules import Alert
from obsdeco.alerts.service import check_alerts, get_alerts
from obsdeco.analyzers.registry import register_analyzer, unregister_analyzer
from obsdeco.collector import MetricsCollector, get_calls, get_report, report, savings
from obsdeco.config import Settings, configure, get_settings
from obsdeco.context import current_session
from obsdeco.decorators import SessionResult, observe_agent, observe_session
from obsdeco.engine.budget_rules import Budget, BudgetExceeded
from obsdeco.engine.cache import cache
from obsdeco.engine.experiment_report import Difference, ExperimentReport, VariantStats
from obsdeco.engine.experiments import (
    ExperimentSummary,
    experiment,
    experiment_report,
    list_experiments,
)
from obsdeco.engine.routes import Route
from obsdeco.engine.scores import get_scores, score
from obsdeco.file_export import export
from obsdeco.integrations.patching import patch_all, unpatch_all
from obsdeco.models import (
    AgentSpan,
    LLMCall,
    ModelProvider,
    ProjectReport,
    SavingsDay,
    SavingsReport,
    Score,
    ScoreBreakdown,
    ScoreStats,
    Session,
    SessionReport,
    Suggestion,
)
from obsdeco.observatory import Observatory
from obsdeco.runtime import Stats, flush, stats
from obsdeco.storage import StorageBackend, register_backend

__all__ = [
    "AgentSpan",
    "Alert",
    "AlertEvent",
    "Budget",
    "BudgetExceeded",
    "Difference",
    "ExperimentReport",
    "ExperimentSummary",
    "LLMCall",
    "MetricsCollector",
    "ModelProvider",
    "Observatory",
    "ProjectReport",
    "Route",
    "SavingsDay",
    "SavingsReport",
    "Score",
    "ScoreBreakdown",
    "ScoreStats",
    "Session",
    "SessionReport",
    "SessionResult",
    "Settings",
    "Stats",
    "StorageBackend",
    "Suggestion",
    "VariantStats",
    "__version__",
    "aflush",
    "aget_calls",
    "aget_report",
    "areport",
    "cache",
    "check_alerts",
    "configure",
    "current_session",
    "experiment",
    "experiment_report",
    "export",
    "flush",
    "get_alerts",
    "get_calls",
    "get_report",
    "get_scores",
    "get_settings",
    "list_experiments",
    "observe_agent",
    "observe_session",
    "patch_all",
    "register_analyzer",
    "register_backend",
    "report",
    "savings",
    "score",
    "stats",
    "unpatch_all",
    "unregister_analyzer",
]


def __getattr__(name: str) -> ModuleType:
    """`obsdeco.otel` is imported on first use: it needs `pip install 'obsdeco[otel]'`."""
    if name == "otel":
        return importlib.import_module("obsdeco.otel")
    raise AttributeError(f"module 'obsdeco' has no attribute {name!r}")
