"""What the optimisation engine does to an LLM call before its request leaves.

The engine acts on the call a seam records, once per call (`plan`): the router may choose
another model (the call's model, body and hash then name it), and inside `obsdeco.cache(...)`
the call gets a `CachePlan`. A hit is answered where it is cheapest, by the seam that found
it: the SDK seam hands the stored bytes to the SDK's own response processing (no request is
built); the HTTP seam returns them as the library's response. On a miss the HTTP seam, which
every captured client sends through, keeps the answer as it passes, and rewrites each
attempt's request for the routed model (`routed_request`).

Before the request leaves, its worst case is reserved in the budgets in scope (`reserve`), which
refuse it with `BudgetExceeded`: the one deliberate exception raised into a call. Every other
step is guarded: a fault leaves the request as it was and the call goes to the provider.
"""

from __future__ import annotations

import json
from typing import Any

from obsdeco.config import get_settings
from obsdeco.engine import budgets
from obsdeco.engine.cache import CachePlan, current_scope
from obsdeco.engine.cache_store import response_cache
from obsdeco.engine.router import Router, router_for
from obsdeco.guard import guarded
from obsdeco.integrations.identity import provider_name_for
from obsdeco.integrations.recorder import CallRecorder
from obsdeco.models import new_id


def engaged() -> bool:
    """Whether the engine may act on a call made now: route rules or budgets configured, a
    cache scope entered, or a session with a budget. The one test a call takes otherwise."""
    settings = get_settings()
    return (
        bool(settings.routes or settings.budgets)
        or current_scope() is not None
        or budgets.session_budgeted()
    )


def _route(recorder: CallRecorder, router: Router) -> None:
    """Send the call to the model of the first rule that routes it, or note a shadow rule's
    model. A request that does not name its model where its format says stays as it is."""
    rule = router.decide(recorder.model, recorder.body or {})
    if rule is None:
        return
    if rule.route.shadow:
        recorder.shadow_model = rule.route.to_model
        return
    changed = recorder.format.with_model("", recorder.body or {}, rule.route.to_model)
    if changed is None and not recorder.format.model_in_path:
        return
    recorder.route_rule = rule
    recorder.call_id = new_id()
    recorder.requested_model = recorder.model
    recorder.routed_from = rule.route.from_model
    recorder.model = rule.route.to_model
    if changed is not None:
        recorder.body = changed[1]


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
def plan(recorder: CallRecorder) -> CachePlan | None:
    """Route the call (or note a shadow rule's model) and make its cache plan; the first seam
    to see a call plans it. The plan, None outside a cache scope."""
    recorder.planned = True
    settings = get_settings()
    router = router_for(settings.routes)
    if router is not None:
        _route(recorder, router)
    scope = current_scope()
    if scope is None:
        return None
    key = (
        f"{recorder.format.provider}:{recorder.api}:{_kind(recorder)}:{recorder.host}:"
        f"{recorder.request_key()}"
    )
    recorder.cache_plan = CachePlan(
        key, scope.ttl_s, response_cache(settings), recorder.format.stream_finished
    )
    recorder.cache_hit = False
    return recorder.cache_plan


def reserve(recorder: CallRecorder) -> None:
    """Hold the call's worst case in every budget in scope, before it is sent; raises
    `BudgetExceeded` (the call then is not sent, nor recorded) when one would be passed."""
    recorder.reservations = budgets.reserve(
        session=recorder.session,
        agent_name=recorder.agent_name,
        provider_name=provider_name_for(recorder.host, recorder.format.provider_name),
        model=recorder.model,
        api=recorder.api,
        body=recorder.body or {},
    )


@guarded()
def routed_request(recorder: CallRecorder, request: Any) -> Any:
    """`request` rewritten for the model its rule routed the call to (each attempt); None when
    the call is not routed, its request already asks for that model (the SDK seam sent it
    so), or the request does not name its model where its format says."""
    rule = recorder.route_rule
    if rule is None or recorder.route_applied:
        return None
    sent = json.loads(request.content)
    if type(sent) is not dict:
        return None
    url = request.url
    changed = recorder.format.with_model(url.path, sent, rule.route.to_model)
    if changed is None:
        return None
    path, body = changed
    headers = request.headers.copy()
    del headers["content-length"]
    return type(request)(
        request.method,
        url.copy_with(path=path) if path != url.path else url,
        headers=headers,
        content=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(),
        extensions=request.extensions,
    )
