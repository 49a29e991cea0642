"""`@observe_session` and `@observe_agent`, for plain, async, generator and async-generator
functions.

A decorated function opens its session (or agent span) when its body starts running and closes
it when the body finishes: for generators, when the consumer exhausts or closes them, not when
they are created. The session or agent is active only while the body runs, so concurrent tasks
and interleaved generators each see their own. Exceptions pass through unchanged.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Generator
from contextvars import Token
from datetime import datetime
from typing import Any, NamedTuple, TypeVar, overload

from obsdeco.collector import MetricsCollector, get_report, implicit_session
from obsdeco.context import (
    AgentFrame,
    _current_agent,
    _current_session,
    current_agent,
    current_session,
)
from obsdeco.engine.budget_rules import checked_budget_usd
from obsdeco.engine.budgets import enter_session_budget, exit_session_budget
from obsdeco.guard import safely
from obsdeco.models import Session, SessionReport, checked_name, new_id, utc_now

F = TypeVar("F", bound=Callable[..., Any])


class SessionResult(NamedTuple):
    """What a `return_report=True` session returns: `value, report = handle(ticket)`."""

    value: Any
    report: SessionReport


class _SessionScope:
    def __init__(
        self,
        collector: MetricsCollector,
        name: str,
        metadata: dict[str, Any] | None,
        budget_usd: float | None,
    ) -> None:
        self._collector = collector
        self._name = name
        self._metadata = metadata
        self._budget_usd = budget_usd
        self.session: Session | None = None

    def begin(self) -> None:
        parent = current_session()
        self.session = self._collector.start_session(
            self._name, self._metadata, parent_id=parent.id if parent else None
        )

    def activate(self) -> tuple[Token[Any], Token[Any] | None] | None:
        session = self.session
        if session is None:
            return None
        budget = (
            None if self._budget_usd is None else enter_session_budget(session, self._budget_usd)
        )
        return _current_session.set(session), budget

    @staticmethod
    def deactivate(tokens: tuple[Token[Any], Token[Any] | None] | None) -> None:
        if tokens is not None:
            session, budget = tokens
            if budget is not None:
                exit_session_budget(budget)
            _current_session.reset(session)

    def end(self, error: BaseException | None) -> None:
        if self.session is not None:
            self._collector.end_session(self.session, error=error)


class _AgentScope:
    def __init__(self, collector: MetricsCollector, name: str, operation: str | None) -> None:
        self._collector = collector
        self._name = name
        self._operation = operation
        self.frame: AgentFrame | None = None
        self._session: Session | None = None
        self._started: datetime | None = None

    def begin(self) -> None:
        self.frame = AgentFrame(self._name, self._operation, new_id(), current_agent())
        self._session = current_session()
        self._started = utc_now()

    def activate(self) -> Token[Any] | None:
        return None if self.frame is None else _current_agent.set(self.frame)

    @staticmethod
    def deactivate(token: Token[Any] | None) -> None:
        if token is not None:
            _current_agent.reset(token)

    def end(self, error: BaseException | None) -> None:
        frame, started = self.frame, self._started
        if frame is None or started is None:
            return
        self._collector.record_agent_span(
            self._session or implicit_session(self._collector.project_name),
            agent_name=frame.name,
            operation=frame.operation,
            started_at=started,
            ended_at=utc_now(),
            parent_id=frame.parent.span_id if frame.parent else None,
            success=error is None,
            error_type=None if error is None else type(error).__name__,
            span_id=frame.span_id,
        )


_Scope = _SessionScope | _AgentScope


def _instrument(function: F, make_scope: Callable[[], _Scope], with_report: bool) -> F:
    """Wrap `function` (of any of the four kinds) so that a fresh scope spans each run."""

    def open_scope() -> tuple[_Scope, Token[Any] | None]:
        scope = make_scope()
        safely("starting a session or agent", scope.begin)
        return scope, safely("activating a session or agent", scope.activate)

    def close_scope(scope: _Scope, token: Token[Any] | None, error: BaseException | None) -> None:
        safely("deactivating a session or agent", lambda: scope.deactivate(token))
        safely("ending a session or agent", lambda: scope.end(error))

    def result(scope: _Scope, value: Any) -> Any:
        if not with_report or not isinstance(scope, _SessionScope) or scope.session is None:
            return value
        report = safely("building the session report", lambda: get_report(scope.session.id))
        return SessionResult(value, report)

    class Steps:
        """Runs each resumption of a wrapped generator inside the generator's scope, which
        opens on the first resumption and ends once."""

        def __init__(self) -> None:
            self.scope: _Scope | None = None
            self.token: Token[Any] | None = None

        def enter(self) -> None:
            if self.scope is None:
                self.scope, self.token = open_scope()
            else:
                self.token = safely("activating a session or agent", self.scope.activate)

        def leave(self) -> None:
            scope, token = self.scope, self.token
            if scope is not None:
                safely("deactivating a session or agent", lambda: scope.deactivate(token))

        def finish(self, error: BaseException | None) -> None:
            scope = self.scope
            if scope is not None:
                safely("ending a session or agent", lambda: scope.end(error))

    if inspect.isasyncgenfunction(function):

        @functools.wraps(function)
        async def observed_async_generator(*args: Any, **kwargs: Any) -> AsyncGenerator[Any]:
            inner, steps = function(*args, **kwargs), Steps()
            to_send: Any = None
            to_throw: BaseException | None = None
            try:
                while True:
                    steps.enter()
                    try:
                        if to_throw is None:
                            item = await inner.asend(to_send)
                        else:
                            error, to_throw = to_throw, None
                            item = await inner.athrow(error)
                    finally:
                        steps.leave()
                    try:
                        to_send = yield item
                    except GeneratorExit:
                        raise
                    except BaseException as error:
                        to_throw = error
            except StopAsyncIteration:
                steps.finish(None)
            except GeneratorExit:
                await inner.aclose()
                steps.finish(None)
                raise
            except BaseException as error:
                steps.finish(error)
                raise

        return observed_async_generator  # type: ignore[return-value]

    if inspect.isgeneratorfunction(function):

        @functools.wraps(function)
        def observed_generator(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            inner, steps = function(*args, **kwargs), Steps()
            to_send: Any = None
            to_throw: BaseException | None = None
            try:
                while True:
                    steps.enter()
                    try:
                        if to_throw is None:
                            item = inner.send(to_send)
                        else:
                            error, to_throw = to_throw, None
                            item = inner.throw(error)
                    finally:
                        steps.leave()
                    try:
                        to_send = yield item
                    except GeneratorExit:
                        raise
                    except BaseException as error:
                        to_throw = error
            except StopIteration as stop:
                steps.finish(None)
                return stop.value
            except GeneratorExit:
                inner.close()
                steps.finish(None)
                raise
            except BaseException as error:
                steps.finish(error)
                raise

        return observed_generator  # type: ignore[return-value]

    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def observed_coroutine(*args: Any, **kwargs: Any) -> Any:
            scope, token = open_scope()
            try:
                value = await function(*args, **kwargs)
            except BaseException as error:
                close_scope(scope, token, error)
                raise
            close_scope(scope, token, None)
            return result(scope, value)

        return observed_coroutine  # type: ignore[return-value]

    @functools.wraps(function)
    def observed_function(*args: Any, **kwargs: Any) -> Any:
        scope, token = open_scope()
        try:
            value = function(*args, **kwargs)
        except BaseException as error:
            close_scope(scope, token, error)
            raise
        close_scope(scope, token, None)
        return result(scope, value)

    return observed_function  # type: ignore[return-value]


def _decorated_or_named(
    decorator: str, function: object, name: str | None
) -> tuple[Any, str | None]:
    """(function, name) of a decorator called bare, with keywords, or with the name first."""
    if function is None or callable(function):
        return function, name
    if isinstance(function, str):
        if name is not None:
            raise TypeError(f"{decorator}() got two names: {function!r} and name={name!r}")
        return None, function
    raise TypeError(f"{decorator}() takes a function or a name, got {type(function).__name__}")


@overload
def observe_session(function: F, /) -> F: ...


@overload
def observe_session(
    positional_name: str | None = None,
    /,
    *,
    name: str | None = None,
    project: str | None = None,
    metadata: dict[str, Any] | None = None,
    return_report: bool = False,
    budget_usd: float | None = None,
) -> Callable[[F], F]: ...


def observe_session(
    function: F | str | None = None,
    /,
    *,
    name: str | None = None,
    project: str | None = None,
    metadata: dict[str, Any] | None = None,
    return_report: bool = False,
    budget_usd: float | None = None,
) -> F | Callable[[F], F]:
    """Run each call of the decorated function in a session of its own.

    LLM calls made while it runs (through patched SDKs, or `record_call`) land in that session.
    A session started inside another one is its child (`parent_id`) and takes the calls made
    while it runs. If the function raises, the session ends with status "error" and the
    exception propagates unchanged. With `return_report=True` the function returns
    `SessionResult(value, report)` (not allowed on generators: read `get_report()` instead).
    The name may also come first: `@observe_session("handle-ticket")`. With `budget_usd`, the
    session's LLM calls may spend at most that much: a call that could pass it raises
    `obsdeco.BudgetExceeded` before it is sent.
    """
    function, name = _decorated_or_named("observe_session", function, name)
    collector = MetricsCollector(project)
    limit = None if budget_usd is None else checked_budget_usd(budget_usd)

    def decorate(target: F) -> F:
        if return_report and (
            inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target)
        ):
            raise TypeError(
                f"return_report=True cannot be used on generator {target.__qualname__}(): "
                "a generator's return value is not its caller's; use obsdeco.get_report()"
            )
        session_name = checked_name(name or target.__name__, "observe_session name")
        return _instrument(
            target, lambda: _SessionScope(collector, session_name, metadata, limit), return_report
        )

    return decorate(function) if function is not None else decorate


@overload
def observe_agent(function: F, /) -> F: ...


@overload
def observe_agent(
    positional_name: str | None = None,
    /,
    *,
    name: str | None = None,
    operation: str | None = None,
) -> Callable[[F], F]: ...


def observe_agent(
    function: F | str | None = None,
    /,
    *,
    name: str | None = None,
    operation: str | None = None,
) -> F | Callable[[F], F]:
    """Attribute the LLM calls made while the decorated function runs to an agent.

    The innermost active agent gets each call; agents nest, and each run is stored as an agent
    span (wall time, parent agent) in the active session. A bare `@observe_agent` is named after
    the function; the name may also come first: `@observe_agent("Researcher")`.
    """
    function, name = _decorated_or_named("observe_agent", function, name)
    collector = MetricsCollector()
    if operation is not None:
        checked_name(operation, "observe_agent operation")

    def decorate(target: F) -> F:
        agent_name = checked_name(name or target.__name__, "observe_agent name")
        return _instrument(target, lambda: _AgentScope(collector, agent_name, operation), False)

    return decorate(function) if function is not None else decorate
