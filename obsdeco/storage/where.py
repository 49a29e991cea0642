"""Queries' filters and groupings as SQL: what `CallFilter`, `SessionFilter` and
`ScoreFilter` select, and the column each `GroupKey` groups calls by."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, or_, select

from obsdeco.storage import rollups
from obsdeco.storage.base import LONG_PROMPT_TOKENS, CallFilter, GroupKey, ScoreFilter
from obsdeco.storage.schema import llm_calls, scores, sessions
from obsdeco.storage.sql_functions import HasKey, UTCHour


def calls_where(statement: Select[Any], where: CallFilter) -> Select[Any]:
    """`statement` restricted to the calls `where` selects."""
    if where.project is not None:
        statement = statement.where(llm_calls.c.project_name == where.project)
    if where.session_id is not None:
        statement = statement.where(llm_calls.c.session_id == where.session_id)
    if where.since is not None:
        statement = statement.where(llm_calls.c.timestamp >= where.since)
    if where.until is not None:
        statement = statement.where(llm_calls.c.timestamp < where.until)
    if where.repeated is not None:
        statement = statement.where(llm_calls.c.repeated.is_(where.repeated))
    if where.model is not None:
        statement = statement.where(group_column("model") == where.model)
    if where.agent is not None:
        statement = statement.where(llm_calls.c.agent_name == where.agent)
    if where.experiment is not None:
        statement = statement.where(HasKey(llm_calls.c.experiments, where.experiment))
    return statement


def sessions_where(
    statement: Select[Any],
    project: str | None,
    since: datetime | None,
    until: datetime | None,
    search: str | None = None,
    model: str | None = None,
    agent: str | None = None,
) -> Select[Any]:
    """`statement` restricted to the sessions of `project` started in [since, until) whose
    name or id contains `search` and that called `model` / from `agent`, each when given."""
    if model is not None or agent is not None:
        made = calls_where(
            select(llm_calls.c.id).where(llm_calls.c.session_id == sessions.c.id),
            CallFilter(model=model, agent=agent),
        )
        statement = statement.where(made.exists())
    if search:
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        statement = statement.where(
            or_(
                sessions.c.name.ilike(pattern, escape="\\"),
                sessions.c.id.ilike(pattern, escape="\\"),
            )
        )
    if project is not None:
        statement = statement.where(sessions.c.project_name == project)
    if since is not None:
        statement = statement.where(sessions.c.started_at >= since)
    if until is not None:
        statement = statement.where(sessions.c.started_at < until)
    return statement


def scores_where(statement: Select[Any], where: ScoreFilter) -> Select[Any]:
    """`statement` restricted to the scores `where` selects."""
    column = scores.c
    for name, value in (
        ("project_name", where.project),
        ("target_id", where.target_id),
        ("session_id", where.session_id),
        ("name", where.name),
        ("model", where.model),
        ("agent_name", where.agent),
    ):
        if value is not None:
            statement = statement.where(column[name] == value)
    if where.since is not None:
        statement = statement.where(column.created_at >= where.since)
    if where.until is not None:
        statement = statement.where(column.created_at < where.until)
    if where.experiment is not None:
        statement = statement.where(HasKey(column.experiments, where.experiment))
    return statement


def group_column(key: GroupKey) -> ColumnElement[Any]:
    """What calls are grouped by for `key`."""
    if key == "hour":
        return UTCHour(llm_calls.c.timestamp)
    if key == "model":
        return func.coalesce(llm_calls.c.response_model, llm_calls.c.model)
    if key == "requested_model":
        return llm_calls.c.model
    if key == "tokens_known":
        return and_(
            llm_calls.c.prompt_tokens.is_not(None), llm_calls.c.completion_tokens.is_not(None)
        )
    if key == "long_prompt":
        return func.coalesce(llm_calls.c.prompt_tokens, 0) >= LONG_PROMPT_TOKENS
    return llm_calls.c[key]


def rollup_value(key: GroupKey) -> ColumnElement[Any]:
    """A call's value of `key` as its rollup row holds it."""
    if key in rollups.OPTIONAL_TEXT:
        return func.coalesce(llm_calls.c[key], "")
    if key == "cache_hit":
        hit = llm_calls.c.cache_hit
        return case(
            (hit.is_(True), rollups.CACHE_HIT_TEXT[True]),
            (hit.is_(False), rollups.CACHE_HIT_TEXT[False]),
            else_=rollups.CACHE_HIT_TEXT[None],
        )
    return group_column(key)


def group_value(key: GroupKey, value: Any) -> Any:
    """A group's value as reports see it. Booleans come back as 0/1 from SQLite; rollups keep
    a missing name as '' and `cache_hit` as text."""
    if key in ("success", "tokens_known", "long_prompt", "repeated"):
        return bool(value)
    if key == "cache_hit":
        if isinstance(value, str):
            return rollups.CACHE_HIT_OF_TEXT[value]
        return None if value is None else bool(value)
    if key in rollups.OPTIONAL_TEXT and value == "":
        return None
    return value
