"""Session analysis: pricing, cost / latency / token / quality breakdowns, suggestions, rendering.

Prices are genai-prices' bundled snapshot (USD per million tokens):
    gpt-4o                  input 2.50   cache read 1.25   output 10.00
    gpt-4o-mini             input 0.15   cache read 0.075  output 0.60
    o3-mini                 input 1.10   cache read 0.55   output 4.40
    text-embedding-3-small  input 0.02                     (no output price)
    claude-sonnet-4-5       input 3.00   cache read 0.30   cache write 3.75   output 15.00
                            above 200k input tokens: 6.00 / 0.60 / 7.50 / 22.50
    claude-haiku-4-5        input 1.00   cache read 0.10   cache write 1.25   output 5.00
A model without a cache-write price (OpenAI) prices cache writes at its input rate, as
genai-prices does.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import genai_prices
import numpy as np
import pytest
from genai_prices import Usage, calc_price

import obsdeco
from obsdeco import MetricsCollector, ModelProvider, Observatory, SessionReport
from obsdeco.analyzers import PRICE_SNAPSHOT, PriceTable, build_report
from obsdeco.collector import sessions_in_memory
from obsdeco.models import AgentSpan, LLMCall, Session

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@dataclass
class Run:
    report: SessionReport
    calls: list[LLMCall]  # as returned by get_calls(): oldest first, cost_usd priced
    session: Session


def _fields(call: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {
        "provider": ModelProvider.OPENAI,
        "model_name": "gpt-4o-mini",
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "latency_ms": 100.0,
    }
    values.update(call)
    return values


def run(*calls: dict[str, Any], spans: tuple[dict[str, Any], ...] = ()) -> Run:
    """Record `calls` (and agent spans) in a fresh session through the explicit API."""
    collector = MetricsCollector("analysis")
    session = collector.start_session("analysis")
    for call in calls:
        collector.record_llm_call(session, **_fields(call))
    for span in spans:
        collector.record_agent_span(session, **span)
    collector.end_session(session)
    return Run(collector.get_report(session), collector.get_calls(session), session)


def direct_report(
    *calls: dict[str, Any], prices: PriceTable | None = None, spans: tuple[AgentSpan, ...] = ()
) -> SessionReport:
    """`build_report` straight from records, without the collector."""
    session = Session(project_name="analysis", started_at=T0, ended_at=T0 + timedelta(seconds=5))
    records = []
    for call in calls:
        values = _fields(call)
        values["model"] = values.pop("model_name")
        records.append(LLMCall(session_id=session.id, project_name="analysis", **values))
    return build_report(session, records, spans, prices or PriceTable())


def repeat(count: int, **call: Any) -> list[dict[str, Any]]:
    return [dict(call) for _ in range(count)]


# --- 1. pricing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "model", "prompt", "cached", "written", "completion", "expected"),
    [
        # 1,200 x $2.50/M + 300 x $10/M = $0.003 + $0.003
        pytest.param("openai", "gpt-4o", 1_200, 0, 0, 300, 0.006, id="gpt-4o"),
        # (3,000 - 2,048) x $2.50/M + 2,048 x $1.25/M + 100 x $10/M
        # = $0.00238 + $0.00256 + $0.001
        pytest.param("openai", "gpt-4o", 3_000, 2_048, 0, 100, 0.00594, id="gpt-4o-cache-read"),
        # 2,000 x $0.15/M + 500 x $0.60/M = $0.0003 + $0.0003
        pytest.param("openai", "gpt-4o-mini", 2_000, 0, 0, 500, 0.0006, id="gpt-4o-mini"),
        # 5,000 x $0.02/M, no output
        pytest.param(
            "openai", "text-embedding-3-small", 5_000, 0, 0, 0, 0.0001, id="text-embedding-3-small"
        ),
        # (10,000 - 6,000 - 3,000) x $3/M + 6,000 x $0.30/M + 3,000 x $3.75/M + 500 x $15/M
        # = $0.003 + $0.0018 + $0.01125 + $0.0075
        pytest.param(
            "anthropic", "claude-sonnet-4-5", 10_000, 6_000, 3_000, 500, 0.02355, id="sonnet-4-5"
        ),
        # 200,000 input tokens is not above the 200k threshold: base tier.
        # 200,000 x $3/M + 1,000 x $15/M = $0.60 + $0.015
        pytest.param(
            "anthropic", "claude-sonnet-4-5", 200_000, 0, 0, 1_000, 0.615, id="sonnet-at-200k"
        ),
        # 200,001 x $6/M + 1,000 x $22.50/M = $1.200006 + $0.0225
        pytest.param(
            "anthropic", "claude-sonnet-4-5", 200_001, 0, 0, 1_000, 1.222506, id="sonnet-above-200k"
        ),
        # Every part at the >200k tier (the threshold counts all input tokens, cached included):
        # (250,000 - 10,000 - 5,000) x $6/M + 10,000 x $0.60/M + 5,000 x $7.50/M
        # + 1,000 x $22.50/M = $1.41 + $0.006 + $0.0375 + $0.0225
        pytest.param(
            "anthropic", "claude-sonnet-4-5", 250_000, 10_000, 5_000, 1_000, 1.476, id="sonnet-tier"
        ),
        # (4,000 - 3,000 - 500) x $1/M + 3,000 x $0.10/M + 500 x $1.25/M + 200 x $5/M
        # = $0.0005 + $0.0003 + $0.000625 + $0.001
        pytest.param(
            "anthropic", "claude-haiku-4-5", 4_000, 3_000, 500, 200, 0.002425, id="haiku-4-5"
        ),
    ],
)
def test_snapshot_prices_to_the_cent(
    provider, model, prompt, cached, written, completion, expected
):
    result = run(
        {
            "provider": provider,
            "model_name": model,
            "prompt_tokens": prompt,
            "cached_tokens": cached,
            "cache_creation_tokens": written,
            "completion_tokens": completion,
        }
    )

    assert result.calls[0].cost_usd == pytest.approx(expected, abs=1e-9)
    assert result.report.cost.total_usd == pytest.approx(expected, abs=1e-9)
    assert result.report.totals.cost_usd == pytest.approx(expected, abs=1e-9)
    assert result.report.cost.by_model == pytest.approx({model: expected}, abs=1e-9)
    assert result.report.cost.unpriced_models == []


def test_cache_reads_and_writes_are_priced_once_never_also_as_input():
    result = run(
        # a fully cached prompt: 10,000 x $0.30/M = $0.003 (not + 10,000 x $3/M = $0.033)
        {
            "provider": "anthropic",
            "model_name": "claude-sonnet-4-5",
            "prompt_tokens": 10_000,
            "cached_tokens": 10_000,
            "completion_tokens": 0,
        },
        # a prompt written to the cache: 8,000 x $3.75/M = $0.03 (not + 8,000 x $3/M = $0.054)
        {
            "provider": "anthropic",
            "model_name": "claude-sonnet-4-5",
            "prompt_tokens": 8_000,
            "cache_creation_tokens": 8_000,
            "completion_tokens": 0,
        },
        # OpenAI cache read: 1,000 x $0.15/M + 4,000 x $0.075/M = $0.00015 + $0.0003
        {
            "model_name": "gpt-4o-mini",
            "prompt_tokens": 5_000,
            "cached_tokens": 4_000,
            "completion_tokens": 0,
        },
    )

    assert [call.cost_usd for call in result.calls] == pytest.approx(
        [0.003, 0.03, 0.00045], abs=1e-9
    )
    assert result.report.cost.total_usd == pytest.approx(0.03345, abs=1e-9)
    assert result.report.tokens.cached_tokens == 14_000
    assert result.report.tokens.cache_creation_tokens == 8_000


def test_dated_model_name_is_priced_as_its_family_and_keyed_by_the_returned_name():
    result = run(
        # requested gpt-4o, returned the dated snapshot: 1,000 x $2.50/M + 100 x $10/M = $0.0035
        {
            "model_name": "gpt-4o",
            "response_model": "gpt-4o-2024-08-06",
            "prompt_tokens": 1_000,
            "completion_tokens": 100,
        },
        # requested by its dated name, nothing returned: 2,000 x $2.50/M = $0.005
        {"model_name": "gpt-4o-2024-08-06", "prompt_tokens": 2_000, "completion_tokens": 0},
    )

    assert [call.cost_usd for call in result.calls] == pytest.approx([0.0035, 0.005], abs=1e-9)
    assert result.report.cost.by_model == pytest.approx({"gpt-4o-2024-08-06": 0.0085}, abs=1e-9)
    assert result.report.cost.unpriced_models == []
    assert set(result.report.tokens.by_model) == {"gpt-4o-2024-08-06"}


_CROSS_CHECK_MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4.1"),
    ("openai", "o3-mini"),
    ("openai", "text-embedding-3-small"),
    ("anthropic", "claude-sonnet-4-5"),
    ("anthropic", "claude-haiku-4-5"),
    ("anthropic", "claude-opus-4-1"),
]
_TOKEN_MIXES = [
    # prompt, cache read, cache write, completion
    (1_000, 0, 0, 200),
    (5_000, 4_000, 0, 50),
    (3_000, 1_000, 1_500, 700),
    (60_000, 0, 60_000, 10),
    (250_000, 20_000, 10_000, 4_000),
    (0, 0, 0, 0),
]


@pytest.mark.parametrize(("provider", "model"), _CROSS_CHECK_MODELS)
@pytest.mark.parametrize(("prompt", "cached", "written", "completion"), _TOKEN_MIXES)
def test_every_cost_equals_genai_prices_calc_price(
    provider, model, prompt, cached, written, completion
):
    expected = calc_price(
        Usage(
            input_tokens=prompt,
            cache_read_tokens=cached,
            cache_write_tokens=written,
            output_tokens=completion,
        ),
        model,
        provider_id=provider,
    ).total_price
    call = {
        "provider": provider,
        "model_name": model,
        "prompt_tokens": prompt,
        "cached_tokens": cached,
        "cache_creation_tokens": written,
        "completion_tokens": completion,
    }

    report = direct_report(call)

    assert report.cost.total_usd == pytest.approx(float(expected), abs=1e-9)
    assert report.cost.unpriced_models == []


def test_the_same_tokens_split_over_calls_cost_what_calc_price_says_per_call():
    mixes = [(1_000, 200, 0, 300), (250_000, 0, 0, 100), (150_000, 100_000, 20_000, 900)]
    expected = sum(
        float(
            calc_price(
                Usage(input_tokens=p, cache_read_tokens=c, cache_write_tokens=w, output_tokens=o),
                "claude-sonnet-4-5",
                provider_id="anthropic",
            ).total_price
        )
        for p, c, w, o in mixes
    )

    result = run(
        *(
            {
                "provider": "anthropic",
                "model_name": "claude-sonnet-4-5",
                "prompt_tokens": p,
                "cached_tokens": c,
                "cache_creation_tokens": w,
                "completion_tokens": o,
            }
            for p, c, w, o in mixes
        )
    )

    # Tiers apply per call: only the 250,000-token call is at the >200k price.
    assert result.report.cost.total_usd == pytest.approx(expected, abs=1e-9)
    assert result.report.totals.cost_usd == pytest.approx(expected, abs=1e-9)


def test_pricing_overrides_win_over_the_snapshot(sqlite_url):
    obsdeco.configure(
        database_url=sqlite_url,
        pricing_overrides={
            "gpt-4o": {"input": 1.0, "output": 2.0},
            "in-house-7b": {"input": 0.5, "output": 0.5, "cache_read": 0.1},
        },
    )

    result = run(
        # no cache_read override: cache reads at the override's input rate
        # 600 x $1/M + 400 x $1/M + 100 x $2/M = $0.0012 (the snapshot would say $0.003)
        {"model_name": "gpt-4o", "prompt_tokens": 1_000, "cached_tokens": 400,
         "completion_tokens": 100},
        # the override is keyed by the requested name and still applies to the dated reply
        # 1,000 x $1/M + 1,000 x $2/M = $0.003
        {"model_name": "gpt-4o", "response_model": "gpt-4o-2024-08-06",
         "prompt_tokens": 1_000, "completion_tokens": 1_000},
        # 1,000 x $0.50/M + 1,000 x $0.10/M + 100 x $0.50/M = $0.00065
        {"provider": "other", "model_name": "in-house-7b", "prompt_tokens": 2_000,
         "cached_tokens": 1_000, "completion_tokens": 100},
    )  # fmt: skip

    assert [call.cost_usd for call in result.calls] == pytest.approx(
        [0.0012, 0.003, 0.00065], abs=1e-9
    )
    assert result.report.cost.total_usd == pytest.approx(0.00485, abs=1e-9)
    assert result.report.cost.unpriced_models == []
    assert result.report.cost.price_source.startswith(PRICE_SNAPSHOT)
    assert "user overrides for gpt-4o, in-house-7b" in result.report.cost.price_source


def test_unknown_model_gets_no_cost_and_is_listed_never_guessed():
    result = run(
        {"model_name": "gpt-4o", "prompt_tokens": 1_000, "completion_tokens": 100},  # $0.0035
        {"model_name": "gpt-unreleased-9", "prompt_tokens": 1_000, "completion_tokens": 100},
        {"provider": "other", "model_name": "acme-xl", "prompt_tokens": 50, "completion_tokens": 5},
    )

    assert [call.cost_usd for call in result.calls] == [pytest.approx(0.0035, abs=1e-9), None, None]
    assert result.report.cost.unpriced_models == ["acme-xl", "gpt-unreleased-9"]
    assert result.report.cost.unpriced_calls == 2
    assert result.report.cost.total_usd == pytest.approx(0.0035, abs=1e-9)
    assert result.report.totals.prompt_tokens == 2_050
    text = str(result.report)
    assert "Unpriced models (cost unknown)" in text
    assert "gpt-unreleased-9" in text


def test_price_source_names_the_genai_prices_version():
    report = run({}).report

    assert report.cost.price_source == f"genai-prices {genai_prices.__version__} (bundled snapshot)"
    assert genai_prices.__version__ in str(report)


def test_calls_with_unknown_tokens_are_not_priced_and_are_counted():
    result = run(
        {"model_name": "gpt-4o", "prompt_tokens": 1_000, "completion_tokens": 100},  # $0.0035
        {"model_name": "gpt-4o", "prompt_tokens": None, "completion_tokens": None},
        # a stream cut before its usage: prompt known, completion unknown
        {"model_name": "gpt-4o", "prompt_tokens": 400, "completion_tokens": None},
    )

    assert [call.cost_usd for call in result.calls] == [pytest.approx(0.0035, abs=1e-9), None, None]
    assert result.report.totals.calls_with_unknown_tokens == 2
    assert result.report.tokens.calls_with_unknown_tokens == 2
    assert result.report.tokens.by_model["gpt-4o"].unknown_calls == 2
    assert result.report.cost.total_usd == pytest.approx(0.0035, abs=1e-9)
    # gpt-4o has a price: the calls are unpriced for lack of tokens, the model is not unpriced
    assert result.report.cost.unpriced_models == []
    assert result.report.totals.prompt_tokens == 1_400
    assert result.report.totals.completion_tokens == 100
    assert "(2 calls without reported tokens)" in str(result.report)


# --- 2. breakdowns ---------------------------------------------------------------------------

MIXED = (
    # $0.0045 = 1,000 x $2.50/M + 200 x $10/M
    {"model_name": "gpt-4o", "response_model": "gpt-4o-2024-08-06", "agent_name": "Planner",
     "operation": "plan", "prompt_tokens": 1_000, "completion_tokens": 200, "latency_ms": 1_500},
    # $0.0044 = 2,000 x $1.10/M + 500 x $4.40/M
    {"model_name": "o3-mini", "agent_name": "Planner", "prompt_tokens": 2_000,
     "completion_tokens": 500, "reasoning_tokens": 320, "latency_ms": 2_500},
    # $0.002425 (see test_snapshot_prices_to_the_cent)
    {"provider": "anthropic", "model_name": "claude-haiku-4-5", "agent_name": "Writer",
     "operation": "draft", "prompt_tokens": 4_000, "cached_tokens": 3_000,
     "cache_creation_tokens": 500, "completion_tokens": 200, "latency_ms": 900},
    # $0.02355
    {"provider": "anthropic", "model_name": "claude-sonnet-4-5", "operation": "draft",
     "prompt_tokens": 10_000, "cached_tokens": 6_000, "cache_creation_tokens": 3_000,
     "completion_tokens": 500, "latency_ms": 3_000},
    # $0.0001
    {"model_name": "text-embedding-3-small", "prompt_tokens": 5_000, "completion_tokens": 0,
     "latency_ms": 100},
)  # fmt: skip


def test_cost_breakdowns_sum_to_the_total():
    cost = run(*MIXED).report.cost

    # 0.0045 + 0.0044 + 0.002425 + 0.02355 + 0.0001
    assert cost.total_usd == pytest.approx(0.034975, abs=1e-9)
    assert cost.by_model == pytest.approx(
        {
            "gpt-4o-2024-08-06": 0.0045,
            "o3-mini": 0.0044,
            "claude-haiku-4-5": 0.002425,
            "claude-sonnet-4-5": 0.02355,
            "text-embedding-3-small": 0.0001,
        },
        abs=1e-9,
    )
    assert cost.by_provider == pytest.approx({"openai": 0.009, "anthropic": 0.025975}, abs=1e-9)
    assert cost.by_agent == pytest.approx(
        {"Planner": 0.0089, "Writer": 0.002425, "(none)": 0.02365}, abs=1e-9
    )
    assert cost.by_operation == pytest.approx(
        {"plan": 0.0045, "draft": 0.025975, "(none)": 0.0045}, abs=1e-9
    )
    for breakdown in (cost.by_model, cost.by_provider, cost.by_agent, cost.by_operation):
        assert sum(breakdown.values()) == pytest.approx(cost.total_usd, abs=1e-9)


def test_token_breakdowns_sum_to_the_totals():
    tokens = run(*MIXED).report.tokens

    assert tokens.prompt_tokens == 22_000  # 1,000 + 2,000 + 4,000 + 10,000 + 5,000
    assert tokens.completion_tokens == 1_400  # 200 + 500 + 200 + 500 + 0
    assert tokens.cached_tokens == 9_000  # 3,000 + 6,000
    assert tokens.cache_creation_tokens == 3_500  # 500 + 3,000
    assert tokens.reasoning_tokens == 320
    assert tokens.total_tokens == 23_400

    assert set(tokens.by_model) == {
        "gpt-4o-2024-08-06",
        "o3-mini",
        "claude-haiku-4-5",
        "claude-sonnet-4-5",
        "text-embedding-3-small",
    }
    planner, writer, none = (tokens.by_agent[k] for k in ("Planner", "Writer", "(none)"))
    assert set(tokens.by_agent) == {"Planner", "Writer", "(none)"}
    assert (planner.calls, planner.prompt_tokens, planner.completion_tokens) == (2, 3_000, 700)
    assert (planner.reasoning_tokens, planner.total_tokens) == (320, 3_700)
    assert (writer.cached_tokens, writer.cache_creation_tokens, writer.total_tokens) == (
        3_000,
        500,
        4_200,
    )
    assert (none.calls, none.prompt_tokens, none.completion_tokens) == (2, 15_000, 500)
    assert (none.cached_tokens, none.cache_creation_tokens) == (6_000, 3_000)

    fields = (
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "cache_creation_tokens",
        "reasoning_tokens",
        "total_tokens",
    )
    for groups in (tokens.by_model, tokens.by_agent):
        assert sum(counts.calls for counts in groups.values()) == 5
        for name in fields:
            assert sum(getattr(c, name) for c in groups.values()) == getattr(tokens, name), name


def test_heaviest_operations_are_ordered_by_total_tokens():
    heaviest = run(*MIXED).report.tokens.heaviest_operations

    # draft: 4,200 + 10,500 = 14,700 in 2 calls; (none): 2,500 + 5,000 = 7,500 in 2; plan: 1,200
    assert [(op.operation, op.calls, op.total_tokens, op.tokens_per_call) for op in heaviest] == [
        ("draft", 2, 14_700, 7_350.0),
        ("(none)", 2, 7_500, 3_750.0),
        ("plan", 1, 1_200, 1_200.0),
    ]


# --- 3. latency ------------------------------------------------------------------------------

LATENCY_CALLS = (
    {"agent_name": "A", "operation": "search", "latency_ms": 2_500, "streamed": True,
     "time_to_first_token_ms": 400},
    {"agent_name": "A", "operation": "search", "latency_ms": 1_000},
    {"agent_name": "A", "operation": "search", "latency_ms": 780},
    {"agent_name": "B", "operation": "write", "latency_ms": 560, "streamed": True,
     "time_to_first_token_ms": 150},
    {"agent_name": "B", "operation": "write", "latency_ms": 410},
    {"agent_name": "B", "operation": "write", "latency_ms": 340},
    {"agent_name": "C", "latency_ms": 120, "streamed": True, "time_to_first_token_ms": 50},
    {"agent_name": "C", "latency_ms": 90},
)  # fmt: skip


def test_latency_percentiles_average_and_total():
    latency = run(*LATENCY_CALLS).report.latency
    values = [call["latency_ms"] for call in LATENCY_CALLS]

    # sorted: 90 120 340 410 560 780 1000 2500 (n = 8, numpy's linear interpolation)
    # p50 at rank 3.5: 410 + 0.5 x 150 = 485; p95 at 6.65: 1000 + 0.65 x 1500 = 1975;
    # p99 at 6.93: 1000 + 0.93 x 1500 = 2395; total 5800, average 725
    assert (latency.p50_ms, latency.p95_ms, latency.p99_ms) == tuple(
        float(v) for v in np.percentile(values, [50, 95, 99])
    )
    assert latency.p50_ms == pytest.approx(485.0)
    assert latency.p95_ms == pytest.approx(1_975.0)
    assert latency.p99_ms == pytest.approx(2_395.0)
    assert latency.avg_ms == 725.0
    assert latency.total_ms == 5_800.0


def test_time_to_first_token_is_over_streamed_calls_only():
    first_token = run(*LATENCY_CALLS).report.latency.time_to_first_token

    # streamed: 400, 150, 50 -> sorted 50 150 400; p50 150; p95 at rank 1.9: 150 + 0.9 x 250
    assert first_token is not None
    assert first_token.calls == 3
    assert first_token.p50_ms == 150.0
    assert first_token.p95_ms == pytest.approx(375.0)
    assert first_token.p95_ms == float(np.percentile([400, 150, 50], 95))
    assert first_token.avg_ms == 200.0


def test_no_streamed_call_means_no_time_to_first_token():
    report = run({"latency_ms": 300}, {"latency_ms": 500}).report

    assert report.latency.time_to_first_token is None
    assert "first token" not in str(report)


def test_bottlenecks_are_ranked_by_share_of_total_latency():
    bottlenecks = run(*LATENCY_CALLS).report.latency.bottlenecks
    agents = [b for b in bottlenecks if b.kind == "agent"]
    operations = [b for b in bottlenecks if b.kind == "operation"]

    # A: 2500 + 1000 + 780 = 4280 of 5800; p95 of [780, 1000, 2500] at rank 1.9 = 2350
    # B: 560 + 410 + 340 = 1310; p95 of [340, 410, 560] = 410 + 0.9 x 150 = 545
    # C: 120 + 90 = 210; p95 of [90, 120] at rank 0.95 = 118.5
    expected = [("A", 3, 4_280.0, 4_280 / 5_800, 2_350.0), ("B", 3, 1_310.0, 1_310 / 5_800, 545.0),
                ("C", 2, 210.0, 210 / 5_800, 118.5)]  # fmt: skip
    assert [(b.name, b.calls, b.total_ms) for b in agents] == [e[:3] for e in expected]
    assert [b.share for b in agents] == pytest.approx([e[3] for e in expected])
    assert [b.p95_ms for b in agents] == pytest.approx([e[4] for e in expected])
    assert [(b.name, b.total_ms) for b in operations] == [
        ("search", 4_280.0),
        ("write", 1_310.0),
        ("(none)", 210.0),
    ]
    assert sum(b.share for b in agents) == pytest.approx(1.0)


def test_agent_wall_time_vs_llm_time_from_recorded_spans():
    spans = (
        {"agent_name": "Researcher", "started_at": T0, "ended_at": T0 + timedelta(seconds=3)},
        {"agent_name": "Researcher", "started_at": T0 + timedelta(seconds=5),
         "ended_at": T0 + timedelta(seconds=6.5)},
        {"agent_name": "Writer", "operation": "draft", "started_at": T0 + timedelta(seconds=7),
         "ended_at": T0 + timedelta(seconds=9)},
    )  # fmt: skip
    report = run(
        {"agent_name": "Researcher", "latency_ms": 1_200},
        {"agent_name": "Researcher", "latency_ms": 800},
        {"agent_name": "Writer", "latency_ms": 900},
        {"latency_ms": 100},
        spans=spans,
    ).report

    times = [(t.agent_name, t.invocations, t.wall_ms, t.llm_ms) for t in report.latency.agent_time]
    # agents without a span ("(none)") have no wall time to compare with
    assert times == [
        ("Researcher", 2, 4_500.0, 2_000.0),  # 3,000 + 1,500 ms of wall time
        ("Writer", 1, 2_000.0, 900.0),
    ]


def test_agent_time_from_decorated_agents_and_observatory_record_call():
    obs = Observatory("analysis")

    @obsdeco.observe_agent(name="Researcher", operation="research")
    def research(latency_ms: float) -> None:
        obs.record_call(
            provider=ModelProvider.OPENAI,
            model_name="gpt-4o-mini",
            prompt_tokens=1_000,
            completion_tokens=100,
            latency_ms=latency_ms,
        )

    @obsdeco.observe_agent
    def summarise() -> None:
        obs.record_call(
            provider="anthropic",
            model_name="claude-haiku-4-5",
            prompt_tokens=2_000,
            completion_tokens=200,
            latency_ms=300,
        )

    @obsdeco.observe_session(return_report=True)
    def handle() -> str:
        research(700)
        research(500)
        summarise()
        return "done"

    started = time.perf_counter()
    value, report = handle()
    elapsed_ms = (time.perf_counter() - started) * 1000

    assert value == "done"
    times = {t.agent_name: t for t in report.latency.agent_time}
    assert list(times) == ["Researcher", "summarise"]
    assert (times["Researcher"].invocations, times["Researcher"].llm_ms) == (2, 1_200.0)
    assert (times["summarise"].invocations, times["summarise"].llm_ms) == (1, 300.0)
    for agent_time in times.values():
        assert 0 < agent_time.wall_ms <= elapsed_ms
    # research: 2 x (1,000 x $0.15/M + 100 x $0.60/M) = $0.00042
    # summarise: 2,000 x $1/M + 200 x $5/M = $0.003
    assert report.cost.by_agent == pytest.approx(
        {"Researcher": 0.00042, "summarise": 0.003}, abs=1e-9
    )
    assert report.cost.by_operation == pytest.approx(
        {"research": 0.00042, "(none)": 0.003}, abs=1e-9
    )


# --- 4. quality ------------------------------------------------------------------------------


def test_success_rate_and_errors_by_type_and_model():
    report = run(
        {"prompt_tokens": 100, "completion_tokens": 20},
        {"prompt_tokens": 300, "completion_tokens": 40},
        {"prompt_tokens": None, "completion_tokens": None, "success": False,
         "error_type": "rate_limit", "error_message": "429"},
        {"prompt_tokens": None, "completion_tokens": None, "success": False,
         "error_type": "server_error"},
        {"provider": "anthropic", "model_name": "claude-haiku-4-5", "prompt_tokens": 500,
         "completion_tokens": 60},
        {"provider": "anthropic", "model_name": "claude-haiku-4-5", "prompt_tokens": None,
         "completion_tokens": None, "success": False, "error_type": "timeout"},
    ).report  # fmt: skip
    quality = report.quality

    assert quality.calls == 6
    assert quality.errors == 3
    assert quality.success_rate == 0.5  # 3 of 6 succeeded
    assert quality.errors_by_type == {"rate_limit": 1, "server_error": 1, "timeout": 1}
    assert quality.errors_by_model == {"gpt-4o-mini": 2, "claude-haiku-4-5": 1}
    # over the calls with known tokens: (120 + 340 + 560) / 3
    assert quality.avg_tokens_per_call == pytest.approx(340.0)
    assert report.totals.errors == 3
    assert report.session.status == "ok"  # the session itself did not raise


def test_quality_of_a_session_without_errors():
    quality = run({"prompt_tokens": 100, "completion_tokens": 50}).report.quality

    assert (quality.success_rate, quality.errors_by_type, quality.errors_by_model) == (1.0, {}, {})
    assert quality.avg_tokens_per_call == 150.0


# --- 5. suggestions --------------------------------------------------------------------------


def _kinds(report: SessionReport) -> list[str]:
    return [suggestion.kind for suggestion in report.suggestions]


def test_cheaper_model_savings_are_priced_at_the_candidates_real_price():
    gpt4o = {"model_name": "gpt-4o", "response_model": "gpt-4o-2024-08-06"}
    sonnet = {"provider": "anthropic", "model_name": "claude-sonnet-4-5"}
    result = run(
        {**gpt4o, "prompt_tokens": 900, "cached_tokens": 400, "completion_tokens": 40},
        {**gpt4o, "prompt_tokens": 700, "completion_tokens": 60},
        {**gpt4o, "prompt_tokens": 500, "completion_tokens": 50},
        {**sonnet, "prompt_tokens": 800, "completion_tokens": 120},
        {**sonnet, "prompt_tokens": 600, "completion_tokens": 80},
        {**sonnet, "prompt_tokens": 1_000, "completion_tokens": 100},
    )

    # gpt-4o: 1,700 uncached x $2.50/M + 400 cached x $1.25/M + 150 out x $10/M = $0.00625
    # gpt-4o-mini, same tokens: 1,700 x $0.15/M + 400 x $0.075/M + 150 x $0.60/M = $0.000375
    # claude-sonnet-4-5: 2,400 x $3/M + 300 x $15/M = $0.0117
    # claude-haiku-4-5, same tokens: 2,400 x $1/M + 300 x $5/M = $0.0039
    assert result.report.cost.total_usd == pytest.approx(0.00625 + 0.0117, abs=1e-9)
    assert _kinds(result.report) == ["cheaper_model", "cheaper_model"]  # largest savings first
    sonnet_tip, gpt4o_tip = result.report.suggestions
    assert sonnet_tip.estimated_savings_usd == pytest.approx(0.0117 - 0.0039, abs=1e-9)
    assert gpt4o_tip.estimated_savings_usd == pytest.approx(0.00625 - 0.000375, abs=1e-9)
    ids = [call.id for call in result.calls]
    assert gpt4o_tip.evidence == ["model=gpt-4o-2024-08-06", "candidate=gpt-4o-mini", *ids[:3]]
    assert sonnet_tip.evidence == ["model=claude-sonnet-4-5", "candidate=claude-haiku-4-5",
                                   *ids[3:]]  # fmt: skip
    assert "gpt-4o-mini" in gpt4o_tip.message
    assert "$0.0004" in gpt4o_tip.message  # the candidate's cost, $0.000375
    assert "$0.0063" in gpt4o_tip.message  # the actual cost, $0.00625


def test_cheaper_model_prices_long_context_calls_at_their_own_tier():
    sonnet = {"provider": "anthropic", "model_name": "claude-sonnet-4-5", "completion_tokens": 100}
    result = run(
        {**sonnet, "prompt_tokens": 250_000},
        {**sonnet, "prompt_tokens": 1_000},
        {**sonnet, "prompt_tokens": 1_000},
    )

    # claude-sonnet-4-5: 250,000 x $6/M + 100 x $22.50/M = $1.50225 (above 200k)
    #                    + 2 x (1,000 x $3/M + 100 x $15/M) = $0.009; actual $1.51125
    # claude-haiku-4-5 (no tiers): 252,000 x $1/M + 300 x $5/M = $0.2535
    assert result.report.cost.total_usd == pytest.approx(1.51125, abs=1e-9)
    tips = [t for t in result.report.suggestions if t.kind == "cheaper_model"]
    assert len(tips) == 1, "one long-context call must not silence the cheaper-model rule"
    assert tips[0].estimated_savings_usd == pytest.approx(1.51125 - 0.2535, abs=1e-9)


def test_cheaper_model_evidence_names_only_the_calls_it_priced():
    failed = {"prompt_tokens": None, "completion_tokens": None, "success": False,
              "error_type": "server_error"}  # fmt: skip
    result = run(
        *repeat(3, model_name="gpt-4o", prompt_tokens=500, completion_tokens=50),
        {**failed, "model_name": "gpt-4o"},  # produced no output: not evidence of short outputs
        *repeat(7, model_name="gpt-4o", prompt_tokens=500, completion_tokens=50),
    )
    succeeded = [call.id for call in result.calls if call.success]

    [tip] = [t for t in result.report.suggestions if t.kind == "cheaper_model"]
    # 10 successful calls: 5,000 x $2.50/M + 500 x $10/M = $0.0175 on gpt-4o,
    # 5,000 x $0.15/M + 500 x $0.60/M = $0.00105 on gpt-4o-mini
    assert tip.estimated_savings_usd == pytest.approx(0.0175 - 0.00105, abs=1e-9)
    assert "10 calls to gpt-4o" in tip.message
    assert tip.evidence == ["model=gpt-4o", "candidate=gpt-4o-mini", *succeeded]


@pytest.mark.parametrize(
    "calls",
    [
        # outputs average 301 tokens (> 300)
        pytest.param([{"completion_tokens": n} for n in (300, 301, 302)], id="long-outputs"),
        pytest.param([{"completion_tokens": 50}] * 2, id="two-calls"),
        pytest.param(
            [{"completion_tokens": 50}] * 2
            + [
                {
                    "completion_tokens": None,
                    "prompt_tokens": None,
                    "success": False,
                    "error_type": "server_error",
                }
            ],
            id="a-failed-call-is-no-evidence",
        ),
    ],
)
def test_cheaper_model_stays_silent_below_its_thresholds(calls):
    report = run(*({"model_name": "gpt-4o", "prompt_tokens": 500, **c} for c in calls)).report

    assert "cheaper_model" not in _kinds(report)


def test_response_cache_savings_are_the_cost_of_the_repeats():
    result = run(
        {"request_hash": "h1", "prompt_tokens": 200, "completion_tokens": 100},
        {"request_hash": "h1", "prompt_tokens": 200, "completion_tokens": 120},
        {"request_hash": "h3", "prompt_tokens": 300, "completion_tokens": 50},
        {"request_hash": "h1", "prompt_tokens": 200, "completion_tokens": 80},
        {"request_hash": "h3", "prompt_tokens": 300, "completion_tokens": 50},
        {"request_hash": "h2", "prompt_tokens": 400, "completion_tokens": 10},
        # a failed repeat served nothing and is no evidence
        {"request_hash": "h2", "prompt_tokens": None, "completion_tokens": None,
         "success": False, "error_type": "timeout"},
    )  # fmt: skip

    # repeats (gpt-4o-mini): 200 x $0.15/M + 120 x $0.60/M = $0.000102,
    # 200 x $0.15/M + 80 x $0.60/M = $0.000078, 300 x $0.15/M + 50 x $0.60/M = $0.000075
    # (the failed call is also 1 of 7 = 14% errors: an error_rate suggestion, no savings)
    assert _kinds(result.report) == ["response_cache", "error_rate"]
    tip = result.report.suggestions[0]
    assert tip.estimated_savings_usd == pytest.approx(0.000255, abs=1e-9)
    assert tip.evidence == ["request_hash=h1 x3", "request_hash=h3 x2"]
    assert tip.message.startswith("3 calls repeated")


def test_response_cache_is_silent_on_unique_requests():
    report = run(*({"request_hash": f"h{i}"} for i in range(5))).report

    assert report.suggestions == []


def test_response_cache_savings_of_an_unpriced_model_are_unknown_not_zero():
    report = run(*repeat(3, model_name="in-house-7b", provider="other", request_hash="h")).report

    [tip] = report.suggestions
    assert tip.kind == "response_cache"
    # the repeats have no price: the savings are unknown (None), never a guessed $0
    assert tip.estimated_savings_usd is None


def test_prompt_caching_on_long_prompts_with_a_low_cached_share():
    haiku = {"provider": "anthropic", "model_name": "claude-haiku-4-5", "completion_tokens": 100}
    result = run(
        {**haiku, "prompt_tokens": 2_000, "cached_tokens": 100},
        {**haiku, "prompt_tokens": 1_500},
        {**haiku, "prompt_tokens": 1_200},
        {**haiku, "prompt_tokens": 1_000},  # under 1,024 tokens: not a candidate
    )

    # cached share 100 / 4,700 = 0.02; the most caching could save: the 4,600 uncached tokens
    # at $1/M instead of the $0.10/M cache-read rate = 4,600 x $0.90/M
    assert _kinds(result.report) == ["prompt_caching"]
    [tip] = result.report.suggestions
    assert tip.estimated_savings_usd == pytest.approx(0.00414, abs=1e-9)
    assert tip.evidence == [
        "model=claude-haiku-4-5",
        "cached_share=0.02",
        *(call.id for call in result.calls[:3]),
    ]


@pytest.mark.parametrize(
    "prompts",
    [
        # cached share 1,000 / 4,700 = 0.21 >= 0.2
        pytest.param([(2_000, 1_000), (1_500, 0), (1_200, 0)], id="cached-enough"),
        pytest.param([(2_000, 0), (1_500, 0)], id="two-long-prompts"),
        pytest.param([(1_023, 0)] * 4, id="short-prompts"),
    ],
)
def test_prompt_caching_stays_silent_below_its_thresholds(prompts):
    report = run(
        *(
            {"provider": "anthropic", "model_name": "claude-haiku-4-5", "prompt_tokens": p,
             "cached_tokens": c, "completion_tokens": 100}
            for p, c in prompts
        )
    ).report  # fmt: skip

    assert report.suggestions == []


def test_latency_bottleneck_names_the_agent_that_dominates():
    report = run(
        {"agent_name": "Researcher", "latency_ms": 800},
        {"agent_name": "Researcher", "latency_ms": 700},
        {"agent_name": "Researcher", "latency_ms": 600},
        {"agent_name": "Writer", "latency_ms": 300},
        {"agent_name": "Critic", "latency_ms": 200},
    ).report

    # Researcher: 2,100 of 2,600 ms = 81%; p95 of [600, 700, 800] = 790 ms
    assert _kinds(report) == ["latency_bottleneck"]
    [tip] = report.suggestions
    assert tip.estimated_savings_usd is None
    assert tip.evidence == ["agent=Researcher", "share=0.81", "calls=3"]
    assert "Researcher" in tip.message
    assert "81%" in tip.message
    assert "790 ms" in tip.message


@pytest.mark.parametrize(
    "latencies",
    [
        pytest.param({"A": [500], "B": [500], "C": [500]}, id="balanced"),
        pytest.param({"A": [300, 300], "B": [300]}, id="under-one-second"),
        pytest.param({"A": [3_000, 2_000]}, id="a-single-agent"),
    ],
)
def test_latency_bottleneck_stays_silent_below_its_thresholds(latencies):
    calls = [
        {"agent_name": a, "latency_ms": ms} for a, values in latencies.items() for ms in values
    ]

    assert run(*calls).report.suggestions == []


def test_rate_limits_and_error_rates_per_provider_and_model():
    ok = {"prompt_tokens": 100, "completion_tokens": 20}
    failed = {"prompt_tokens": None, "completion_tokens": None, "success": False}
    result = run(
        # openai gpt-4o-mini: 1 of 20 rate limited = 5% (>= 5%)
        *repeat(19, **ok),
        {**failed, "error_type": "rate_limit"},
        # anthropic claude-haiku-4-5: 1 of 5 failed = 20% (>= 10%)
        *repeat(4, provider="anthropic", model_name="claude-haiku-4-5", **ok),
        {**failed, "provider": "anthropic", "model_name": "claude-haiku-4-5",
         "error_type": "server_error"},
        # the same model name through another provider: 1 of 3 failed = 33%
        *repeat(2, provider="other", **ok),
        {**failed, "provider": "other", "error_type": "bad_request"},
    )  # fmt: skip
    ids = [call.id for call in result.calls]

    tips = {(t.kind, t.evidence[0], t.evidence[1]): t for t in result.report.suggestions}
    assert set(tips) == {
        ("rate_limits", "provider=openai", "model=gpt-4o-mini"),
        ("error_rate", "provider=anthropic", "model=claude-haiku-4-5"),
        ("error_rate", "provider=other", "model=gpt-4o-mini"),
    }
    assert tips["rate_limits", "provider=openai", "model=gpt-4o-mini"].evidence[2:] == [ids[19]]
    assert tips["error_rate", "provider=anthropic", "model=claude-haiku-4-5"].evidence[2:] == [
        ids[24]
    ]
    assert tips["error_rate", "provider=other", "model=gpt-4o-mini"].evidence[2:] == [ids[27]]
    assert "1 of 20" in tips["rate_limits", "provider=openai", "model=gpt-4o-mini"].message
    assert "20%" in tips["error_rate", "provider=anthropic", "model=claude-haiku-4-5"].message


@pytest.mark.parametrize(
    ("total", "error_type"),
    [
        pytest.param(21, "rate_limit", id="1-of-21-rate-limited"),  # 4.8% < 5%
        pytest.param(11, "server_error", id="1-of-11-failed"),  # 9.1% < 10%
        pytest.param(2, "server_error", id="1-of-2-too-few-calls"),
    ],
)
def test_error_suggestions_stay_silent_below_their_thresholds(total, error_type):
    calls = [
        *repeat(total - 1),
        {"prompt_tokens": None, "completion_tokens": None, "success": False,
         "error_type": error_type},
    ]  # fmt: skip

    assert run(*calls).report.suggestions == []


def test_a_few_rate_limits_do_not_hide_a_high_error_rate():
    failed = {"prompt_tokens": None, "completion_tokens": None, "success": False}
    result = run(
        *repeat(6),
        {**failed, "error_type": "rate_limit"},  # 1 of 10 rate limited: 10%
        *repeat(3, **failed, error_type="server_error"),  # 3 of 10 server errors: 30%
    )
    server_errors = [call.id for call in result.calls[7:]]

    kinds = _kinds(result.report)
    assert "rate_limits" in kinds
    assert "error_rate" in kinds, "30% server errors vanish behind the rate-limit suggestion"
    [error_tip] = [t for t in result.report.suggestions if t.kind == "error_rate"]
    assert set(server_errors) <= set(error_tip.evidence)


def test_every_suggestion_carries_evidence():
    report = run(
        *repeat(3, model_name="gpt-4o", prompt_tokens=2_000, completion_tokens=50,
                request_hash="same", agent_name="Slow", latency_ms=900),
        *repeat(2, agent_name="Fast", latency_ms=100),
        {"prompt_tokens": None, "completion_tokens": None, "success": False,
         "error_type": "rate_limit"},
    ).report  # fmt: skip

    assert set(_kinds(report)) == {
        "cheaper_model",
        "response_cache",
        "prompt_caching",
        "latency_bottleneck",
        "rate_limits",
    }
    for suggestion in report.suggestions:
        assert suggestion.evidence, suggestion.kind
        assert suggestion.message
    savings = [s.estimated_savings_usd or 0.0 for s in report.suggestions]
    assert savings == sorted(savings, reverse=True)


def test_a_clean_session_yields_no_suggestion():
    calls = [
        {"agent_name": agent, "operation": f"{agent.lower()}-step", "request_hash": f"{agent}{i}",
         "prompt_tokens": 500 + 50 * i, "completion_tokens": 100, "latency_ms": 400}
        for agent in ("Planner", "Researcher", "Writer")
        for i in range(3)
    ] + [
        {"provider": "anthropic", "model_name": "claude-haiku-4-5", "agent_name": agent,
         "operation": f"{agent.lower()}-step", "request_hash": f"haiku-{agent}",
         "prompt_tokens": 800, "completion_tokens": 200, "latency_ms": 400}
        for agent in ("Planner", "Researcher", "Writer")
    ]  # fmt: skip

    report = run(*calls).report

    assert report.quality.success_rate == 1.0
    assert report.suggestions == []
    assert "nothing to change on this evidence" in str(report)


# --- 6. reports: empty, JSON, text, Markdown --------------------------------------------------


def test_an_empty_session_gives_a_valid_report():
    report = run().report

    assert report.totals.calls == 0
    assert report.totals.cost_usd == 0.0
    assert report.cost.by_model == {}
    assert report.tokens.by_agent == {}
    assert report.tokens.heaviest_operations == []
    assert report.latency.p50_ms is None
    assert report.latency.time_to_first_token is None
    assert report.latency.bottlenecks == []
    assert report.quality.success_rate == 1.0
    assert report.quality.avg_tokens_per_call is None
    assert report.suggestions == []
    dumped = report.model_dump(mode="json")
    assert json.loads(json.dumps(dumped)) == dumped
    text = str(report)
    assert "0 calls (0 failed)" in text
    assert "nothing to change on this evidence" in text
    assert "## Totals" in report.to_markdown()


def test_build_report_on_no_calls_and_no_spans():
    report = build_report(Session(project_name="p"), [], [], PriceTable())

    assert report.totals.duration_ms is None
    assert report.latency.agent_time == []
    assert json.dumps(report.model_dump(mode="json"))


def test_model_dump_round_trips_through_json():
    report = run(
        *MIXED,
        *repeat(3, model_name="gpt-4o", request_hash="dup", agent_name="Planner", latency_ms=5_000),
        {"prompt_tokens": None, "completion_tokens": None, "success": False,
         "error_type": "rate_limit", "streamed": True},
        {"streamed": True, "time_to_first_token_ms": 80},
        {"model_name": "acme-xl", "provider": "other"},
    ).report  # fmt: skip
    assert report.suggestions  # a report with every section filled in

    dumped = report.model_dump(mode="json")
    text = json.dumps(dumped)

    assert json.loads(text) == dumped
    assert SessionReport.model_validate_json(text) == report
    assert dumped["cost"]["unpriced_models"] == ["acme-xl"]
    assert dumped["session"]["status"] == "ok"


def test_text_report_has_aligned_sections_and_the_numbers():
    report = run(
        # $0.006
        {"model_name": "gpt-4o", "agent_name": "Planner", "operation": "plan",
         "prompt_tokens": 1_200, "completion_tokens": 300, "latency_ms": 1_500},
        # $0.002425
        {"provider": "anthropic", "model_name": "claude-haiku-4-5", "agent_name": "Writer",
         "operation": "draft", "prompt_tokens": 4_000, "cached_tokens": 3_000,
         "cache_creation_tokens": 500, "completion_tokens": 200, "latency_ms": 500},
    ).report  # fmt: skip

    text = str(report)

    assert text.startswith("obsdeco session report: analysis\n")
    # total $0.008425; latencies [1500, 500]: p50 1000, p95 500 + 0.95 x 1000, p99 1490
    totals = (
        "Totals\n"
        "  calls             2 calls (0 failed)\n"
        "  cost              $0.0084\n"
        "  tokens            5,700 = 5,200 prompt + 500 completion\n"
        "  cached tokens     3,000 read, 500 written\n"
        "  reasoning tokens  0\n"
        "  success rate      100.0%\n"
    )
    assert totals in text
    latency = (
        "Latency\n"
        "  p50 / p95 / p99     1,000 ms / 1,450 ms / 1,490 ms\n"
        "  average             1,000 ms\n"
        "  total in LLM calls  2,000 ms\n"
    )
    assert latency in text
    assert "Cost by model\n  claude-haiku-4-5  $0.0024\n  gpt-4o            $0.0060\n" in text
    assert "Cost by agent\n  Planner  $0.0060\n  Writer   $0.0024\n" in text
    assert "Bottlenecks\n  agent Planner    75% of LLM time, p95 1,500 ms, 1 call\n" in text
    assert "  operation draft  25% of LLM time, p95 500 ms, 1 call\n" in text
    assert "\nSuggestions\n  latency_bottleneck  agent Planner takes 75%" in text
    assert text.endswith(f"Prices\n  source  {PRICE_SNAPSHOT}")


def test_markdown_report_renders_tables():
    markdown = run(
        {"model_name": "gpt-4o", "agent_name": "triage|route", "prompt_tokens": 1_200,
         "completion_tokens": 300, "latency_ms": 1_500},
        {"provider": "anthropic", "model_name": "claude-haiku-4-5", "prompt_tokens": 4_000,
         "completion_tokens": 200, "latency_ms": 500},
    ).report.to_markdown()  # fmt: skip

    assert markdown.startswith("# obsdeco session report: analysis\n")
    assert markdown.endswith("\n")
    # claude-haiku-4-5: 4,000 x $1/M + 200 x $5/M = $0.005; total $0.011
    assert (
        "## Totals\n\n| | |\n|---|---|\n| calls | 2 calls (0 failed) |\n| cost | $0.0110 |\n"
        in (markdown)
    )
    assert "## Cost by model\n\n| | |\n|---|---|\n| claude-haiku-4-5 | $0.0050 |\n" in markdown
    assert "| gpt-4o | $0.0060 |" in markdown
    assert r"| triage\|route | $0.0060 |" in markdown  # a pipe in a name does not split the cell
    assert "| p50 / p95 / p99 | 1,000 ms / 1,450 ms / 1,490 ms |" in markdown
    table_rows = [line for line in markdown.splitlines() if line.startswith("|")]
    assert all(line.replace(r"\|", "").count("|") == 3 for line in table_rows)


def test_report_from_storage_equals_the_in_process_report(configured):
    collector = MetricsCollector("analysis")
    session = collector.start_session("stored")
    for call in (*MIXED, *repeat(3, model_name="gpt-4o", request_hash="dup", latency_ms=400)):
        collector.record_llm_call(session, **_fields(call))
    collector.record_agent_span(
        session, agent_name="Planner", started_at=T0, ended_at=T0 + timedelta(seconds=6)
    )
    collector.end_session(session)
    in_process = collector.get_report(session)
    obsdeco.flush()
    sessions_in_memory.clear()

    from_storage = obsdeco.get_report(session.id)

    for section in ("totals", "cost", "latency", "tokens", "quality"):
        assert getattr(from_storage, section) == getattr(in_process, section), section
    assert [(s.kind, s.estimated_savings_usd) for s in from_storage.suggestions] == [
        (s.kind, s.estimated_savings_usd) for s in in_process.suggestions
    ]
    assert from_storage.cost.total_usd == pytest.approx(0.034975 + 3 * 0.00045, abs=1e-9)
