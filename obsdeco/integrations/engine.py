"""What the optimisation engine does to an LLM request at the HTTP seam, before it is sent.

Every client obsdeco captures sends through `httpx` / `httpx2` (the SDKs too), so the engine
acts there, on the call a seam records (the SDK seam's call in flight, or the HTTP seam's own):

- the router may rewrite the request for another model (`route`);
- inside `obsdeco.cache(...)`, an identical earlier answer is replayed as the library's own
  response, built from the stored status, headers and body bytes, so the SDK above parses it
  as if it had come from the provider (every endpoint, stream and helper alike); otherwise
  the answer is kept as it passes (`CachePlan.keep`), and stored only when it succeeded.

Each step is guarded: a fault leaves the request as it was and the call goes to the provider.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from obsdeco.config import get_settings
from obsdeco.engine.cache import current_scope
from obsdeco.engine.cache_store import CachedResponse, ResponseCache, response_cache
from obsdeco.engine.router import router_for
from obsdeco.guard import guarded
from obsdeco.integrations.format import ProviderFormat
from obsdeco.integrations.recorder import CallRecorder
from obsdeco.models import new_id

_TAIL = 256
"""How many last bytes of a stream are searched for its format's end marker."""
_UNSTORED_HEADERS = frozenset({"set-cookie", "transfer-encoding", "connection", "keep-alive"})
_DECODED_HEADERS = frozenset({"content-encoding", "content-length"})
"""Headers that no longer describe a body the library has already decoded."""


@guarded()
def route(recorder: CallRecorder, request: Any) -> Any:
    """The request to send: rewritten for the routed model when a rule routes it (each retry
    of a routed call again), else `request` itself. A shadow rule only notes its model."""
    rule = recorder.route_rule
    if rule is None:
        router = router_for(get_settings().routes)
        if router is None:
            return request
        rule = router.decide(recorder.model, recorder.body or {})
        if rule is None:
            return request
        if rule.route.shadow:
            recorder.shadow_model = rule.route.to_model
            return request
    rewritten = _for_model(recorder, request, rule.route.to_model)
    if rewritten is None:
        return request  # the request does not name its model where its format says
    routed, body = rewritten
    if recorder.route_rule is None:
        recorder.route_rule = rule
        recorder.call_id = new_id()
        recorder.requested_model = recorder.model
        recorder.routed_from = rule.route.from_model
        recorder.model = rule.route.to_model
        recorder.body = body
    return routed


def _for_model(
    recorder: CallRecorder, request: Any, model: str
) -> tuple[Any, dict[str, Any]] | None:
    """A copy of `request` asking for `model`, and its body."""
    sent = json.loads(request.content)
    if type(sent) is not dict:
        return None
    url = request.url
    changed = recorder.format.with_model(url.path, sent, model)
    if changed is None:
        return None
    path, body = changed
    headers = request.headers.copy()
    del headers["content-length"]
    routed = type(request)(
        request.method,
        url.copy_with(path=path) if path != url.path else url,
        headers=headers,
        content=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(),
        extensions=request.extensions,
    )
    return routed, body


@dataclass(frozen=True, slots=True)
class CachePlan:
    """Where a call inside a cache scope is looked up and its answer kept."""

    key: str
    ttl_s: float | None
    store: ResponseCache
    format: ProviderFormat

    def replay(self, request: Any, response_type: type) -> Any:
        """The stored answer as the library's response to `request`, or None (a miss)."""
        entry = self.store.get(self.key)
        if entry is None:
            return None
        response = response_type(
            status_code=entry.status,
            headers=list(entry.headers),
            content=entry.body,
            request=request,
        )
        response.elapsed = timedelta(0)
        return response

    def keep_read(self, response: Any) -> None:
        """Store an answer whose body the library has read (and decoded), if it succeeded."""
        if response.status_code < 400:
            self._put(
                response.status_code, _headers(response.headers, _DECODED_HEADERS), response.content
            )

    def keep_streamed(self, status: int, headers: Any, raw: bytes, whole: bool) -> None:
        """Store a streamed answer as its raw bytes (still encoded as its headers say): read to
        its end (`whole`), or closed once its format's last event arrived."""
        if not whole and (
            headers.get("content-encoding", "identity") != "identity"
            or not self.format.stream_finished(raw[-_TAIL:])
        ):
            return
        if status < 400:
            self._put(status, _headers(headers, frozenset({"content-length"})), raw)

    def _put(self, status: int, headers: tuple[tuple[str, str], ...], body: bytes) -> None:
        self.store.put(self.key, CachedResponse(status, headers, body, time.time()), self.ttl_s)


def _headers(headers: Any, dropped: frozenset[str]) -> tuple[tuple[str, str], ...]:
    return tuple(
        (name, value)
        for name, value in headers.items()
        if name.lower() not in dropped and name.lower() not in _UNSTORED_HEADERS
    )


def _kind(recorder: CallRecorder) -> str:
    """What the answer is made of: a JSON body, or a stream with the `stream_options` asked
    (the request hash leaves them out, but a stream asked for its usage has one more chunk)."""
    if not recorder.streamed:
        return "json"
    options = (recorder.body or {}).get("stream_options")
    if options is None:
        return "stream"
    return f"stream{json.dumps(options, sort_keys=True, separators=(',', ':'), default=str)}"


@guarded()
def cache_plan(recorder: CallRecorder) -> CachePlan | None:
    """The cache plan of a call made inside `obsdeco.cache(...)` (a miss until replayed);
    None outside one."""
    scope = current_scope()
    if scope is None:
        return None
    key = (
        f"{recorder.format.provider}:{recorder.api}:{_kind(recorder)}:{recorder.host}:"
        f"{recorder.request_key()}"
    )
    plan = CachePlan(key, scope.ttl_s, response_cache(get_settings()), recorder.format)
    recorder.cache_hit = False
    return plan
