"""Scores: quality feedback on a session or an LLM call (user thumbs, an evaluator, a judge).

A score is validated and attributed on the caller's thread, then stored by the background
writer like every other record. Listeners (the model router) learn each accepted score.
"""

from __future__ import annotations

import math
import numbers
import threading
from collections.abc import Callable
from datetime import datetime
from functools import partial

from obsdeco.collector import checked_range, keep_score, sessions_in_memory
from obsdeco.guard import safely
from obsdeco.models import MAX_ID_LENGTH, LLMCall, Score, Session, checked_name
from obsdeco.runtime import flush, get_runtime
from obsdeco.storage.base import ScoreFilter

ScoreListener = Callable[[Score], None]

_listeners: list[ScoreListener] = []
_listeners_lock = threading.Lock()


def add_score_listener(callback: ScoreListener) -> None:
    """Call `callback(score)` for every score accepted in this process, on the thread that
    gave it; an exception in `callback` is logged once and ignored."""
    if not callable(callback):
        raise ValueError(f"callback must be callable, got {type(callback).__name__}")
    with _listeners_lock:
        _listeners.append(callback)


def remove_score_listener(callback: ScoreListener) -> None:
    """Stop calling `callback` (no error if it was not added)."""
    with _listeners_lock:
        if callback in _listeners:
            _listeners.remove(callback)


def _checked_value(value: object) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if not isinstance(value, numbers.Real):
        raise ValueError(
            f"value must be a number in [0, 1] or a bool, got {value!r:.80} "
            f"({type(value).__name__})"
        )
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"value must be a finite number in [0, 1], got {number!r}")
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"value must be in [0, 1], got {number!r}")
    return number


def _target_id(target: object) -> str:
    if isinstance(target, Session | LLMCall):
        return target.id
    if not isinstance(target, str) or not target:
        raise ValueError(
            f"target_id must be the id of a session or an LLM call, got {target!r:.80}"
        )
    return target


def _find_target(target_id: str) -> Session | LLMCall | None:
    """The session or call with this id: in memory first (a session just ended is there,
    so scoring it waits for nothing), else in the store once what is queued is written."""
    if len(target_id) > MAX_ID_LENGTH:
        return None
    live = sessions_in_memory.find(target_id)
    if live is not None:
        return live.session
    runtime = get_runtime()
    for session in list(runtime.implicit_sessions.values()):
        if session.id == target_id:
            return session
    held = sessions_in_memory.find_call(target_id)
    if held is not None:
        return held[1]
    flush()
    return runtime.backend.find_target(target_id)


def score(
    target_id: str | Session | LLMCall,
    name: str,
    value: float | bool,
    comment: str | None = None,
) -> Score:
    """Record quality feedback on a session or an LLM call and return the stored `Score`.

    `target_id` is a session's or a call's id (or the `Session` / `LLMCall` itself), known in
    this process or in the store; `value` is a number in [0, 1] or a bool (True is 1.0).
    Bad input raises `ValueError` naming the problem. The score is written by the
    background writer (`obsdeco.flush()` waits for it); its comment is stored like an error
    message: without secrets or PII, and encrypted with `encryption_key`.
    """
    name = checked_name(name, "score name")
    number = _checked_value(value)
    if comment is not None and not isinstance(comment, str):
        raise ValueError(f"comment must be text or None, got {type(comment).__name__}")
    wanted = _target_id(target_id)
    target = _find_target(wanted)
    if target is None:
        raise ValueError(
            f"target_id: no session or LLM call with id {wanted!r:.80} in this process or "
            "in the store"
        )
    if isinstance(target, Session):
        accepted = Score(
            target_id=wanted,
            session_id=target.id,
            project_name=target.project_name,
            name=name,
            value=number,
            comment=comment,
            experiments=target.experiments,
        )
    else:
        accepted = Score(
            target_id=wanted,
            session_id=target.session_id,
            call_id=target.id,
            project_name=target.project_name,
            name=name,
            value=number,
            comment=comment,
            model=target.model_key,
            agent_name=target.agent_name,
            experiments=target.experiments,
        )
    keep_score(accepted)
    with _listeners_lock:
        listeners = list(_listeners)
    for listener in listeners:
        place = f"score listener {getattr(listener, '__qualname__', type(listener).__name__)}"
        safely(place, partial(listener, accepted))
    return accepted


def get_scores(
    target_id: str | None = None,
    *,
    session_id: str | None = None,
    name: str | None = None,
    project: str | None = None,
    experiment: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
) -> list[Score]:
    """Stored scores, oldest first: of one target (`target_id`: a session's own scores, or a
    call's), of a session and its calls (`session_id`), by score name, project, experiment
    (targets assigned in it), or given in [since, until). Queued records are written first."""
    checked_range(since, until)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
    flush()
    where = ScoreFilter(
        project=project,
        target_id=target_id,
        session_id=session_id,
        name=name,
        since=since,
        until=until,
        experiment=experiment,
    )
    return get_runtime().backend.query_scores(where, limit)
