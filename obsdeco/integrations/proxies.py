"""Transparent proxies around what an SDK returns, each recording its call exactly once.

`ObservedStream` / `ObservedAsyncStream` wrap an SDK stream: same type for `isinstance`, same
attributes and helpers, same events (less one the accumulator asks to hide). The call is
recorded when the stream is exhausted, errors, is closed, or is dropped.
`ObservedResponse` / `ObservedAsyncResponse` wrap a raw response (`with_raw_response`,
`with_streaming_response`) whose body is read later.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import wrapt

from obsdeco.integrations.facts import FactsSource, StreamAccumulator, observe_event
from obsdeco.integrations.recorder import CallRecorder, ErrorDetail
from obsdeco.runtime import pipeline


def record_later(
    recorder: CallRecorder,
    facts: FactsSource,
    *,
    error_status: int | None = None,
    error_detail: ErrorDetail = None,
) -> None:
    """For a stream or response dropped without being closed: record from the writer thread,
    not from the garbage collector (which may run while this thread holds a lock obsdeco
    needs), as having ended now. Nothing to do if the call was already recorded; a call dropped
    once no writer runs (at interpreter exit) is counted as dropped."""
    if recorder.ended:
        return
    ended = time.perf_counter()
    deferred = pipeline.defer(
        lambda: recorder.record(
            facts, error_status=error_status, error_detail=error_detail, ended=ended
        )
    )
    if not deferred:
        pipeline.counters.add("dropped_at_exit", 1)


class ObservedStream(wrapt.ObjectProxy):  # type: ignore[misc]
    """A sync SDK stream that records its call once: exhausted, errored, closed or dropped.

    Everything else (attributes, `response`, context manager, helpers) is the SDK's own.
    """

    def __init__(self, stream: Any, recorder: CallRecorder, accumulator: StreamAccumulator) -> None:
        super().__init__(stream)
        self._self_recorder = recorder
        self._self_accumulator = accumulator

    def __iter__(self) -> ObservedStream:
        return self

    def __next__(self) -> Any:
        recorder = self._self_recorder
        try:
            while True:
                event = self.__wrapped__.__next__()
                if recorder.first_token_at is None:
                    recorder.first_token_at = time.perf_counter()
                if not observe_event(self._self_accumulator, event):
                    return event
        except StopIteration:
            recorder.record(self._self_accumulator.facts)
            raise
        except BaseException as error:
            recorder.record(self._self_accumulator.facts, error)
            raise

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_recorder.record(self._self_accumulator.facts)

    def __enter__(self) -> ObservedStream:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            return self.__wrapped__.__exit__(*exc_info)
        finally:
            self._self_recorder.record(self._self_accumulator.facts)

    def __del__(self) -> None:
        record_later(self._self_recorder, self._self_accumulator.facts)


class ObservedAsyncStream(wrapt.ObjectProxy):  # type: ignore[misc]
    """The async twin of `ObservedStream`."""

    def __init__(self, stream: Any, recorder: CallRecorder, accumulator: StreamAccumulator) -> None:
        super().__init__(stream)
        self._self_recorder = recorder
        self._self_accumulator = accumulator

    def __aiter__(self) -> ObservedAsyncStream:
        return self

    async def __anext__(self) -> Any:
        recorder = self._self_recorder
        try:
            while True:
                event = await self.__wrapped__.__anext__()
                if recorder.first_token_at is None:
                    recorder.first_token_at = time.perf_counter()
                if not observe_event(self._self_accumulator, event):
                    return event
        except StopAsyncIteration:
            recorder.record(self._self_accumulator.facts)
            raise
        except BaseException as error:
            recorder.record(self._self_accumulator.facts, error)
            raise

    async def close(self) -> None:
        try:
            await self.__wrapped__.close()
        finally:
            self._self_recorder.record(self._self_accumulator.facts)

    async def __aenter__(self) -> ObservedAsyncStream:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            return await self.__wrapped__.__aexit__(*exc_info)
        finally:
            self._self_recorder.record(self._self_accumulator.facts)

    def __del__(self) -> None:
        record_later(self._self_recorder, self._self_accumulator.facts)


Observe = Callable[[CallRecorder, Any], Any]
"""How a seam observes a parsed result: returns the result, or its observed proxy."""
BodyFacts = Callable[[CallRecorder], FactsSource]
"""How a seam reads the facts of a raw response's body, once read (or none)."""


class _ObservedResponseBase(wrapt.ObjectProxy):  # type: ignore[misc]
    """A raw SDK response whose parsed result is observed; recorded once in any case: when
    parsed, else when closed or dropped, with what the body or the parsed stream showed."""

    def __init__(
        self, response: Any, recorder: CallRecorder, observe: Observe, body_facts: BodyFacts
    ) -> None:
        super().__init__(response)
        self._self_recorder = recorder
        self._self_observe_parsed = observe
        self._self_body_facts = body_facts
        self._self_stream: StreamAccumulator | None = None

    def _self_observe(self, parsed: Any) -> Any:
        observed = self._self_observe_parsed(self._self_recorder, parsed)
        if isinstance(observed, ObservedStream | ObservedAsyncStream):
            self._self_stream = observed._self_accumulator
        return observed

    def _self_facts(self) -> FactsSource:
        if self._self_stream is not None:
            return self._self_stream.facts
        return self._self_body_facts(self._self_recorder)

    def __del__(self) -> None:
        if self._self_stream is None:  # a parsed stream records the call itself
            record_later(self._self_recorder, self._self_facts())


class ObservedResponse(_ObservedResponseBase):
    """A sync raw response (`with_raw_response`, `with_streaming_response`)."""

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_observe(self.__wrapped__.parse(*args, **kwargs))

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_recorder.record(self._self_facts())


class ObservedAsyncResponse(_ObservedResponseBase):
    """The async twin of `ObservedResponse`."""

    async def parse(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_observe(await self.__wrapped__.parse(*args, **kwargs))

    async def close(self) -> None:
        try:
            await self.__wrapped__.close()
        finally:
            self._self_recorder.record(self._self_facts())
