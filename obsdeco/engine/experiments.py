"""Prompt experiments: a variant per session, picked by a stable hash and recorded on the
session and on the calls recorded after it; reports compare the variants.

`experiment(..., auto_select=True)` gives sessions not yet assigned the experiment's winner
once there is one. The winner is computed from the store at most once per `WINNER_CACHE_S`
seconds per experiment and project (and again whenever `experiment_report()` runs over all
time), so that `experiment()` does not query the database on every call.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from typing import TypeVar

from pydantic import BaseModel

from obsdeco.analyzers import PriceTable, price_calls
from obsdeco.collector import checked_range
from obsdeco.config import get_settings
from obsdeco.context import current_session
from obsdeco.engine.experiment_report import ExperimentReport
from obsdeco.engine.experiment_stats import build_experiment_report
from obsdeco.guard import safely
from obsdeco.models import Session, checked_name
from obsdeco.runtime import flush, get_runtime, pipeline
from obsdeco.storage import SessionState
from obsdeco.storage.base import CallFilter, ReportStore, ScoreFilter

V = TypeVar("V")

WINNER_CACHE_S = 60.0
"""How long a computed winner (or its absence) is reused by `auto_select`."""

_assigning = threading.Lock()
_winners: dict[tuple[str, str, str], tuple[float, str | None]] = {}
"""(database URL, project, experiment) -> (when computed, winner)."""


class ExperimentSummary(BaseModel):
    """An experiment as stored: its variants with their sessions."""

    name: str
    variants: dict[str, int]
    """variant -> sessions assigned it"""
    sessions: int


def assigned_variant(session_id: str, experiment: str, variants: list[str]) -> str:
    """The variant a stable hash of the session id and the experiment name picks."""
    digest = hashlib.blake2b(f"{session_id}\x00{experiment}".encode(), digest_size=8).digest()
    return variants[int.from_bytes(digest, "big") % len(variants)]


def _variant_names(variants: object) -> list[str]:
    if not isinstance(variants, Mapping) or not variants:
        raise ValueError(
            f"variants must be a non-empty dict of variant name -> value, got {variants!r:.80}"
        )
    for key in variants:
        if not isinstance(key, str):
            raise ValueError(
                f"variant names must be strings, got {key!r:.80} ({type(key).__name__})"
            )
        checked_name(key, "variant name")
    return list(variants)


def experiment(
    name: str,
    variants: Mapping[str, V],
    auto_select: bool = False,
    *,
    session: Session | None = None,
) -> V:
    """The value of the variant assigned to the current session (or `session`).

    The first call in a session assigns a variant: a stable hash of the session id and
    `name` picks one of `variants` (in their order), or, with `auto_select`, the winner of
    the experiment once there is one. Later calls in the session return the same variant.
    The assignment is stored on the session and on every call recorded in it afterwards.
    Outside a session (and without `session`) this raises `ValueError`, as do an empty
    `variants`, a variant name that is not text, or a bad experiment name.
    """
    name = checked_name(name, "experiment name")
    names = _variant_names(variants)
    target = session if session is not None else current_session()
    if target is None:
        raise ValueError(
            f"experiment {name!r}: no active session; call experiment() inside "
            "@obsdeco.observe_session or Observatory.track(), or pass session="
        )
    known = target.experiments.get(name)
    winner = None
    if known is None and auto_select:
        winner = _cached_winner(target.project_name, name)
    with _assigning:
        known = target.experiments.get(name)
        assigned = known
        if assigned is None:
            if target.ended_at is not None:
                raise ValueError(
                    f"experiment {name!r}: session {target.id!r} has ended; variants are "
                    "assigned while a session runs"
                )
            assigned = winner if winner in names else assigned_variant(target.id, name, names)
            # Replaced, never changed in place: calls recorded so far keep their own copy.
            target.experiments = {**target.experiments, name: assigned}
    if assigned not in variants:
        raise ValueError(
            f"experiment {name!r}: this session was assigned variant {assigned!r}, which is "
            f"not among the variants given ({', '.join(map(repr, names))})"
        )
    if known is None and target.sampled:
        pipeline.submit(SessionState(target.model_copy()))
    return variants[assigned]


def _cached_winner(project: str, name: str) -> str | None:
    key = (get_settings().database_url, project, name)
    found = _winners.get(key)
    if found is not None and time.monotonic() - found[0] < WINNER_CACHE_S:
        return found[1]
    report = safely("experiment winner", lambda: _report(name, project, None, None))
    winner = None if report is None else report.winner
    _winners[key] = (time.monotonic(), winner)
    return winner


def stored_experiment_report(
    backend: ReportStore,
    prices: PriceTable,
    name: str,
    project: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> ExperimentReport:
    """The report of experiment `name` from what `backend` holds now."""
    assigned = backend.experiment_sessions(name, project, since, until)
    calls = backend.query_calls(CallFilter(project=project, since=since, experiment=name))
    scores = backend.query_scores(ScoreFilter(project=project, experiment=name))
    return build_experiment_report(
        name, project, since, until, assigned, price_calls(calls, prices), scores
    )


def _report(
    name: str, project: str | None, since: datetime | None, until: datetime | None
) -> ExperimentReport:
    """The report from what is stored now (nothing is flushed here); one over all time
    refreshes the winner `auto_select` uses."""
    report = stored_experiment_report(
        get_runtime().backend,
        get_runtime().prices,
        name,
        project,
        since,
        until,
    )
    if project is not None and since is None and until is None:
        _winners[(get_settings().database_url, project, name)] = (
            time.monotonic(),
            report.winner,
        )
    return report


def experiment_report(
    name: str,
    project: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> ExperimentReport:
    """How the variants of experiment `name` compare, over the sessions started in
    [since, until) in `project` (every project if None); records still queued are written
    first. A session's figures count its calls recorded after the assignment."""
    name = checked_name(name, "experiment name")
    if project is not None:
        project = checked_name(project, "project")
    checked_range(since, until)
    flush()
    return _report(name, project, since, until)


def list_experiments(project: str | None = None) -> list[ExperimentSummary]:
    """Every stored experiment (of `project`, or of all), by name, with its variants'
    sessions; records still queued are written first."""
    flush()
    summaries: dict[str, ExperimentSummary] = {}
    for row in get_runtime().backend.experiment_variants(project):
        summary = summaries.setdefault(
            row.experiment, ExperimentSummary(name=row.experiment, variants={}, sessions=0)
        )
        summary.variants[row.variant] = row.sessions
        summary.sessions += row.sessions
    return list(summaries.values())
