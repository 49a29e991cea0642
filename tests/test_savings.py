"""What the response cache and the router saved: calls priced as paid, the reports' cache and
routing sections (a session's, and a project's from the rollups), the per-day savings view and
its command, and suggestions that name the switch to turn on.

Prices (genai-prices): gpt-4o $2.50/M input, $10/M output; gpt-4o-mini $0.15/M, $0.60/M.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta

import pytest

import obsdeco
from obsdeco.analyzers import PriceTable, build_report
from obsdeco.models import LLMCall
from obsdeco.runtime import get_runtime

DAY = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
NEXT_DAY = DAY + timedelta(days=1)


def _gpt4o(prompt: int, completion: int) -> float:
    return prompt * 2.5 / 1e6 + completion * 10 / 1e6


def _mini(prompt: int, completion: int) -> float:
    return prompt * 0.15 / 1e6 + completion * 0.6 / 1e6


MISS = _gpt4o(1_000, 100)  # $0.0035, also what each hit would have cost
ROUTED_AT_FROM, ROUTED = _gpt4o(2_000, 200), _mini(2_000, 200)  # $0.007, $0.00042
SHADOW, SHADOW_AT_MINI = _gpt4o(500, 50), _mini(500, 50)  # $0.00175, $0.000105
PLAIN = _gpt4o(100, 10)  # $0.00035
COST = MISS + 3 * ROUTED + 2 * SHADOW + PLAIN
CACHE_SAVED = 3 * MISS
ROUTING_SAVED = 3 * (ROUTED_AT_FROM - ROUTED)  # 3 x $0.00658
SHADOW_SAVED = 2 * (SHADOW - SHADOW_AT_MINI)  # 2 x $0.001645
# cheaper_model on the gpt-4o calls sent (the miss, the plain call and the two shadow calls),
# and prompt_caching on the three long routed prompts (6,000 tokens at $0.15/M, read at $0.075/M):
REMAINING = _gpt4o(2_100, 210) - _mini(2_100, 210) + 6_000 * (0.15 - 0.075) / 1e6


def _record_engine_calls(project: str = "shop") -> tuple[obsdeco.Session, list[LLMCall]]:
    """One session: on DAY a cache miss and two hits of the same request, three calls routed
    from gpt-4o to gpt-4o-mini (one failed) and a plain call; on NEXT_DAY one more hit and,
    an hour apart, two calls a shadow rule would have routed to gpt-4o-mini."""
    collector = obsdeco.MetricsCollector(project)
    session = collector.start_session("engine")
    cached = {"model_name": "gpt-4o", "request_hash": "same-question", **_tokens(1_000, 100)}
    hit = cached | {"cache_hit": True, "latency_ms": 1.0}
    routed = {"model_name": "gpt-4o-mini", "requested_model": "gpt-4o", "routed_from": "gpt-4o"}
    routed |= _tokens(2_000, 200)
    shadow = {"model_name": "gpt-4o", "shadow_model": "gpt-4o-mini", **_tokens(500, 50)}
    plan = [
        (DAY, cached | {"cache_hit": False}),
        (DAY + timedelta(minutes=1), hit),
        (DAY + timedelta(minutes=2), hit),
        (DAY + timedelta(minutes=3), routed),
        (DAY + timedelta(minutes=4), routed),
        (DAY + timedelta(minutes=5), routed | {"success": False, "error_type": "server_error"}),
        (DAY + timedelta(minutes=6), {"model_name": "gpt-4o", **_tokens(100, 10)}),
        (NEXT_DAY, hit),
        (NEXT_DAY + timedelta(minutes=30), shadow),
        (NEXT_DAY + timedelta(minutes=90), shadow),
    ]
    calls = [
        collector.record_llm_call(
            session, provider="openai", timestamp=moment, **({"latency_ms": 100.0} | fields)
        )
        for moment, fields in plan
    ]
    collector.end_session(session)
    obsdeco.flush()
    return session, calls


def _tokens(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion}


def test_calls_are_priced_as_paid_with_what_they_saved(configured):
    session, _ = _record_engine_calls()

    calls = obsdeco.get_calls(session.id)

    assert [call.cost_usd for call in calls] == pytest.approx(
        [MISS, 0.0, 0.0, ROUTED, ROUTED, ROUTED, PLAIN, 0.0, SHADOW, SHADOW]
    )
    routing = ROUTED_AT_FROM - ROUTED
    assert [call.saved_usd for call in calls] == pytest.approx(
        [None, MISS, MISS, routing, routing, routing, None, MISS, None, None]
    )


def test_a_dearer_route_saves_a_negative_amount_and_an_unpriced_one_none(configured):
    collector = obsdeco.MetricsCollector("shop")
    session = collector.start_session()
    for routed_from in ("gpt-4o-mini", "in-house-model"):
        collector.record_llm_call(
            session,
            provider="openai",
            model_name="gpt-4o",
            latency_ms=100.0,
            requested_model=routed_from,
            routed_from=routed_from,
            **_tokens(2_000, 200),
        )
    collector.end_session(session)
    obsdeco.flush()

    dearer, unpriced = obsdeco.get_calls(session.id)

    assert dearer.saved_usd == pytest.approx(ROUTED - ROUTED_AT_FROM)  # -$0.00658
    assert unpriced.saved_usd is None
    for report in (collector.get_report(session), obsdeco.report("shop")):
        assert report.routing.routed_calls == 2
        assert report.routing.saved_usd == pytest.approx(ROUTED - ROUTED_AT_FROM)
        assert list(report.routing.by_rule) == [
            "gpt-4o-mini -> gpt-4o",
            "in-house-model -> gpt-4o",
        ]


def test_the_session_report_has_exact_cache_and_routing_sections(configured):
    session, _ = _record_engine_calls()

    report = obsdeco.get_report(session.id)

    assert report.totals.calls == 10  # hits count as calls
    assert report.totals.cost_usd == pytest.approx(COST)
    assert report.cost.by_model == pytest.approx(
        {"gpt-4o": MISS + 2 * SHADOW + PLAIN, "gpt-4o-mini": 3 * ROUTED}
    )
    assert report.cache.model_dump() == pytest.approx(
        {"hits": 3, "misses": 1, "saved_usd": CACHE_SAVED, "hit_rate": 0.75}
    )
    routing = report.routing
    assert (routing.routed_calls, routing.shadow_calls) == (3, 2)
    assert routing.saved_usd == pytest.approx(ROUTING_SAVED)
    assert routing.shadow_saved_usd == pytest.approx(SHADOW_SAVED)
    assert routing.routed_success_rate == pytest.approx(2 / 3)
    assert routing.unrouted_success_rate == 1.0
    assert list(routing.by_rule) == ["gpt-4o -> gpt-4o-mini"]
    assert routing.by_rule["gpt-4o -> gpt-4o-mini"].model_dump() == pytest.approx(
        {
            "routed_calls": 3,
            "saved_usd": ROUTING_SAVED,
            "shadow_calls": 2,
            "shadow_saved_usd": SHADOW_SAVED,
            "success_rate": 2 / 3,
            "shadow_success_rate": 1.0,
        }
    )


def test_the_stored_session_row_costs_hits_nothing(configured):
    _record_engine_calls()

    (stored,) = get_runtime().backend.query_sessions(project="shop")

    assert stored.calls == 10
    assert stored.cost_usd == pytest.approx(COST)


def test_shadow_mode_saves_nothing_and_reports_what_it_would_save(configured):
    collector = obsdeco.MetricsCollector("shop")
    session = collector.start_session()
    for _ in range(2):
        collector.record_llm_call(
            session,
            provider="openai",
            model_name="gpt-4o",
            latency_ms=100.0,
            shadow_model="gpt-4o-mini",
            **_tokens(500, 50),
        )
    collector.end_session(session)
    obsdeco.flush()

    for report in (collector.get_report(session), obsdeco.report("shop")):
        assert report.totals.cost_usd == pytest.approx(2 * SHADOW)
        assert report.routing.routed_calls == 0
        assert report.routing.saved_usd == 0.0
        assert report.routing.shadow_calls == 2
        assert report.routing.shadow_saved_usd == pytest.approx(SHADOW_SAVED)
        assert report.cache.hits == report.cache.misses == 0


RANGES = [
    pytest.param(None, None, id="everything"),
    pytest.param(DAY + timedelta(minutes=2), NEXT_DAY + timedelta(hours=1), id="edges"),
    pytest.param(DAY + timedelta(hours=1), NEXT_DAY + timedelta(hours=1), id="whole-hours"),
]


@pytest.mark.parametrize(("since", "until"), RANGES)
def test_the_project_report_from_rollups_equals_the_report_of_the_calls(configured, since, until):
    session, calls = _record_engine_calls()
    inside = [
        call
        for call in calls
        if (since is None or call.timestamp >= since) and (until is None or call.timestamp < until)
    ]

    project = obsdeco.report("shop", since=since, until=until)
    expected = build_report(session, inside, [], PriceTable())

    assert project.totals.cost_usd == pytest.approx(expected.totals.cost_usd)
    assert project.cost.by_model == pytest.approx(expected.cost.by_model)
    assert project.cache.model_dump() == pytest.approx(expected.cache.model_dump())
    assert project.routing.model_dump(exclude={"by_rule"}) == pytest.approx(
        expected.routing.model_dump(exclude={"by_rule"})
    )
    assert project.routing.by_rule.keys() == expected.routing.by_rule.keys()
    for name, rule in project.routing.by_rule.items():
        assert rule.model_dump() == pytest.approx(expected.routing.by_rule[name].model_dump())
    assert [s.kind for s in project.suggestions] == [s.kind for s in expected.suggestions]
    assert [s.estimated_savings_usd for s in project.suggestions] == pytest.approx(
        [s.estimated_savings_usd for s in expected.suggestions]
    )


def test_the_project_report_renders_the_sections(configured):
    _record_engine_calls()

    report = obsdeco.report("shop")
    text = str(report)

    cache = text.split("\nResponse cache\n")[1].split("\n\n")[0].splitlines()
    assert cache == ["  hits / misses  3 / 1 (hit rate 75.0%)", "  saved          $0.0105"]
    routing = text.split("\nRouting\n")[1].split("\n\n")[0].splitlines()
    assert routing == [
        "  routed calls                         3",
        "  saved                                $0.0197",
        "  success rate                         66.7% routed, 100.0% not routed",
        "  shadow calls                         2",
        "  shadow would save                    $0.0033",
        "  rule gpt-4o -> gpt-4o-mini           3 calls routed, saved $0.0197, success 66.7%",
        "  rule gpt-4o -> gpt-4o-mini (shadow)  2 calls, would save $0.0033, success 100.0%",
    ]
    markdown = report.to_markdown()
    assert "## Response cache" in markdown
    assert "| rule gpt-4o -> gpt-4o-mini | 3 calls routed, saved $0.0197, success 66.7% |" in (
        markdown
    )


def test_reports_without_the_engine_show_no_cache_or_routing_section(configured):
    collector = obsdeco.MetricsCollector("shop")
    session = collector.start_session()
    collector.record_llm_call(
        session, provider="openai", model_name="gpt-4o", latency_ms=1.0, **_tokens(10, 1)
    )
    collector.end_session(session)

    text = str(collector.get_report(session))

    assert "Response cache" not in text
    assert "Routing" not in text


def test_savings_per_day_from_the_rollups(configured):
    _record_engine_calls()
    _record_engine_calls("blog")

    found = obsdeco.savings("shop")

    assert [day.day for day in found.days] == [date(2026, 3, 2), date(2026, 3, 3)]
    first, second = (day.model_dump(exclude={"day"}) for day in found.days)
    assert first == pytest.approx(
        {
            "cache_saved_usd": 2 * MISS,
            "routing_saved_usd": ROUTING_SAVED,
            "shadow_saved_usd": 0.0,
            "cache_hits": 2,
            "routed_calls": 3,
        }
    )
    assert second == pytest.approx(
        {
            "cache_saved_usd": MISS,
            "routing_saved_usd": 0.0,
            "shadow_saved_usd": SHADOW_SAVED,
            "cache_hits": 1,
            "routed_calls": 0,
        }
    )
    assert (found.cache_hits, found.routed_calls) == (3, 3)
    assert found.cache_saved_usd == pytest.approx(CACHE_SAVED)
    assert found.routing_saved_usd == pytest.approx(ROUTING_SAVED)
    assert found.shadow_saved_usd == pytest.approx(SHADOW_SAVED)
    assert found.saved_usd == pytest.approx(CACHE_SAVED + ROUTING_SAVED)
    assert [s.kind for s in found.suggestions] == ["cheaper_model", "prompt_caching", "error_rate"]
    assert found.remaining_potential_usd == pytest.approx(REMAINING)
    assert obsdeco.savings().saved_usd == pytest.approx(2 * found.saved_usd)


def test_savings_over_a_range_with_partial_hours(configured):
    _record_engine_calls()

    found = obsdeco.savings(
        "shop", since=DAY + timedelta(minutes=2), until=NEXT_DAY + timedelta(hours=1)
    )

    # One hit of DAY, the routed calls, the hit of NEXT_DAY and the first shadow call.
    assert [(day.day, day.cache_hits, day.routed_calls) for day in found.days] == [
        (date(2026, 3, 2), 1, 3),
        (date(2026, 3, 3), 1, 0),
    ]
    assert found.cache_saved_usd == pytest.approx(2 * MISS)
    assert found.shadow_saved_usd == pytest.approx(SHADOW - SHADOW_AT_MINI)
    assert obsdeco.savings("shop", since=NEXT_DAY + timedelta(days=1)).days == []
    with pytest.raises(ValueError, match="until must be timezone-aware"):
        obsdeco.savings(until=datetime(2026, 3, 2))


def test_savings_on_the_command_line(configured):
    _record_engine_calls()

    def run(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "obsdeco.cli", "--database-url", configured, "savings", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    text = run("--project", "shop")

    assert text.startswith("obsdeco savings: shop\n")
    saved = text.split("\nSaved\n")[1].split("\n\n")[0].splitlines()
    assert saved == [
        "  in total                      $0.0302",
        "  by the response cache         $0.0105 (3 calls answered)",
        "  by the router                 $0.0197 (3 calls routed)",
        "  shadow rules would save       $0.0033",
        "  suggestions could still save  $0.0074",
    ]
    days = text.split("\nPer day (UTC): cache / router / shadow\n")[1].split("\n\n")[0]
    assert days.splitlines() == [
        "  2026-03-02  $0.0070 (2 hits) / $0.0197 (3 routed) / $0.0000",
        "  2026-03-03  $0.0035 (1 hit) / $0.0000 (0 routed) / $0.0033",
    ]
    as_json = json.loads(run("--project", "shop", "--format", "json"))
    assert as_json["cache_hits"] == 3
    assert [day["day"] for day in as_json["days"]] == ["2026-03-02", "2026-03-03"]
    assert "## Saved" in run("--project", "shop", "--format", "markdown")


def test_suggestions_name_the_switch_and_leave_cache_hits_out(configured):
    collector = obsdeco.MetricsCollector("shop")
    session = collector.start_session()
    call = {"provider": "openai", "model_name": "gpt-4o", "latency_ms": 100.0}
    call |= {"request_hash": "same-question", **_tokens(1_000, 100)}
    for _ in range(3):
        collector.record_llm_call(session, **call)
    collector.end_session(session)
    cached = collector.start_session()
    collector.record_llm_call(cached, cache_hit=False, **call)
    for _ in range(3):
        collector.record_llm_call(cached, cache_hit=True, **call)
    collector.end_session(cached)

    uncached = {s.kind: s for s in collector.get_report(session).suggestions}
    served = [s.kind for s in collector.get_report(cached).suggestions]

    assert uncached["response_cache"].message == (
        "2 calls repeated an identical earlier request (1 distinct requests); a response cache "
        "would have served them: make them inside with obsdeco.cache(ttl_s=...)"
    )
    assert uncached["response_cache"].estimated_savings_usd == pytest.approx(2 * MISS)
    assert uncached["cheaper_model"].message.endswith(
        ": route such requests with obsdeco.Route(from_model='gpt-4o', "
        "to_model='gpt-4o-mini') (try shadow=True first)"
    )
    # The hits were sent to no provider: no repeats, and too few gpt-4o calls for a pattern.
    assert served == []
