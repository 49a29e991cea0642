"""Hourly rollups: project reports over whole and partial hours, repeats told at write time,
percentiles estimated from histograms over many calls, and stores written before rollups."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy

import obsdeco
from obsdeco.analyzers import PriceTable, build_report
from obsdeco.models import LLMCall
from obsdeco.storage import SQLAlchemyStorage, WriteBatch, histogram, rollups, schema, schema_setup
from obsdeco.storage.migrations.state import VERSION_TABLE

BASE = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _record_spread(project: str = "shop") -> tuple[obsdeco.Session, list[LLMCall]]:
    """60 calls, one every 7 minutes from 09:00 to 15:53, on two providers and two agents;
    some answered by the response cache or missed by it, some routed from gpt-4o to
    gpt-4o-mini, some that a shadow rule would have routed."""
    collector = obsdeco.MetricsCollector(project)
    session = collector.start_session("spread")
    calls = []
    for index in range(60):
        anthropic = index % 3 == 0
        success = index % 11 != 5
        routed = not anthropic and index % 5 == 2
        engine = {
            "cache_hit": {1: True, 2: False}.get(index % 4) if success else None,
            "shadow_model": "gpt-4o-mini" if not anthropic and index % 5 == 3 else None,
        }
        if routed:
            engine |= {"requested_model": "gpt-4o", "routed_from": "gpt-4o"}
        calls.append(
            collector.record_llm_call(
                session,
                provider="anthropic" if anthropic else "openai",
                model_name="claude-sonnet-4-5"
                if anthropic
                else ("gpt-4o-mini" if routed else "gpt-4o"),
                latency_ms=100.0 + (index * 137) % 900,
                prompt_tokens=200 + 40 * index,
                completion_tokens=20 + index,
                cached_tokens=64 if index % 4 == 0 else 0,
                time_to_first_token_ms=30.0 + index if index % 2 else None,
                streamed=bool(index % 2),
                agent_name="Planner" if index % 5 else None,
                operation="draft" if index % 2 else "plan",
                success=success,
                error_type=None if success else "rate_limit",
                request_hash=f"request-{index % 45}",
                timestamp=BASE + timedelta(minutes=7 * index),
                **engine,
            )
        )
    collector.end_session(session)
    obsdeco.flush()
    return session, calls


def _reference(session: obsdeco.Session, calls: list[LLMCall]) -> obsdeco.SessionReport:
    return build_report(session, calls, [], PriceTable())


RANGES = [
    pytest.param(None, None, id="everything"),
    pytest.param(BASE + timedelta(hours=1), BASE + timedelta(hours=4), id="whole-hours"),
    pytest.param(BASE + timedelta(minutes=25), BASE + timedelta(hours=4, minutes=10), id="edges"),
    pytest.param(BASE + timedelta(minutes=10), BASE + timedelta(minutes=50), id="inside-an-hour"),
    pytest.param(BASE + timedelta(hours=2, minutes=1), None, id="open-ended"),
]


@pytest.mark.parametrize(("since", "until"), RANGES)
def test_project_report_over_any_range_equals_a_report_of_its_calls(configured, since, until):
    session, calls = _record_spread()
    inside = [
        call
        for call in calls
        if (since is None or call.timestamp >= since) and (until is None or call.timestamp < until)
    ]

    project = obsdeco.report("shop", since=since, until=until)
    expected = _reference(session, inside)

    assert project.totals.calls == len(inside)
    assert project.totals.model_dump(exclude={"duration_ms"}) == pytest.approx(
        expected.totals.model_dump(exclude={"duration_ms"})
    )
    assert project.cost.by_model == pytest.approx(expected.cost.by_model)
    assert project.cost.by_agent == pytest.approx(expected.cost.by_agent)
    assert project.tokens.by_model == expected.tokens.by_model
    assert project.quality == expected.quality
    assert project.cache.model_dump() == pytest.approx(expected.cache.model_dump())
    assert project.routing.model_dump(exclude={"by_rule"}) == pytest.approx(
        expected.routing.model_dump(exclude={"by_rule"})
    )
    assert {name: rule.model_dump() for name, rule in project.routing.by_rule.items()} == {
        name: pytest.approx(rule.model_dump()) for name, rule in expected.routing.by_rule.items()
    }
    assert project.latency.percentiles_exact
    for name in ("p50_ms", "p95_ms", "p99_ms", "avg_ms", "total_ms"):
        assert getattr(project.latency, name) == pytest.approx(getattr(expected.latency, name))
    first_token = project.latency.time_to_first_token
    expected_first_token = expected.latency.time_to_first_token
    assert (first_token and first_token.model_dump()) == pytest.approx(
        expected_first_token and expected_first_token.model_dump()
    )
    assert [(b.kind, b.name, b.calls) for b in project.latency.bottlenecks] == [
        (b.kind, b.name, b.calls) for b in expected.latency.bottlenecks
    ]
    assert [
        value for b in project.latency.bottlenecks for value in (b.total_ms, b.share, b.p95_ms)
    ] == pytest.approx(
        [value for b in expected.latency.bottlenecks for value in (b.total_ms, b.share, b.p95_ms)]
    )


def test_percentiles_over_many_calls_are_estimated_within_one_percent(configured, monkeypatch):
    monkeypatch.setattr(rollups, "EXACT_PERCENTILES_UP_TO", 0)
    session, calls = _record_spread()
    since = BASE + timedelta(minutes=25)
    inside = [call for call in calls if call.timestamp >= since]

    project = obsdeco.report("shop", since=since)
    expected = _reference(session, inside)

    assert not project.latency.percentiles_exact
    for name in ("p50_ms", "p95_ms", "p99_ms"):
        assert getattr(project.latency, name) == pytest.approx(
            getattr(expected.latency, name), rel=histogram.RELATIVE_ACCURACY
        )
    assert project.latency.avg_ms == pytest.approx(expected.latency.avg_ms)
    first_token = project.latency.time_to_first_token
    assert first_token is not None
    assert expected.latency.time_to_first_token is not None
    assert first_token.p95_ms == pytest.approx(
        expected.latency.time_to_first_token.p95_ms, rel=histogram.RELATIVE_ACCURACY
    )
    assert "p50 / p95 / p99 (within 1%)" in str(project)


def test_histogram_percentiles_are_within_the_relative_accuracy_of_numpy():
    values = np.random.default_rng(3).lognormal(mean=6.0, sigma=1.2, size=20_000)
    halves = [histogram.Histogram(), histogram.Histogram()]
    for part, chunk in zip(halves, np.array_split(values, 2), strict=True):
        counts: dict[int, int] = {}
        for value in chunk:
            bucket = histogram.bucket_of(float(value))
            counts[bucket] = counts.get(bucket, 0) + 1
        part.add_encoded(histogram.encode(counts))
    halves[0].merge(halves[1])
    from_values = histogram.Histogram()
    from_values.add_values(values.tolist())
    quantiles = [0.0, 0.01, 0.5, 0.95, 0.99, 1.0]

    estimated = halves[0].percentiles(quantiles)

    exact = np.percentile(values, [q * 100 for q in quantiles])
    assert estimated == pytest.approx(exact.tolist(), rel=histogram.RELATIVE_ACCURACY)
    assert from_values.percentiles(quantiles) == estimated
    assert histogram.Histogram().percentiles([0.5]) == []


def test_repeats_are_told_across_batches_and_sessions(configured):
    collector = obsdeco.MetricsCollector("shop")
    fields = {
        "provider": "openai",
        "model_name": "gpt-4o",
        "latency_ms": 500.0,
        "prompt_tokens": 1_000,
        "completion_tokens": 100,
        "request_hash": "same-question",
    }
    first = collector.start_session("first")
    collector.record_llm_call(first, timestamp=BASE, **fields)
    collector.record_llm_call(
        first, timestamp=BASE, success=False, error_type="server_error", **fields
    )
    collector.end_session(first)
    obsdeco.flush()
    second = collector.start_session("second")
    for minute in (1, 2, 3):
        collector.record_llm_call(second, timestamp=BASE + timedelta(minutes=minute), **fields)
    collector.end_session(second)
    obsdeco.flush()

    everything = obsdeco.report("shop")
    later = obsdeco.report("shop", since=BASE + timedelta(minutes=1))

    # 1,000 x $2.50/M + 100 x $10/M = $0.0035 a call; the three repeats cost $0.0105.
    for report in (everything, later):
        (cache,) = [s for s in report.suggestions if s.kind == "response_cache"]
        assert cache.message.startswith("3 calls repeated an identical earlier request;")
        assert cache.estimated_savings_usd == pytest.approx(0.0105)
        assert cache.evidence == ["request_hash=same-question: 4 identical calls in the project"]
    # Within the second session alone, two of its three calls are repeats.
    (in_session,) = [
        s for s in obsdeco.get_report(second.id).suggestions if s.kind == "response_cache"
    ]
    assert in_session.estimated_savings_usd == pytest.approx(0.007)


def test_agent_wall_time_reaches_the_project_report(configured):
    @obsdeco.observe_agent("Researcher")
    def research() -> None:
        obsdeco.MetricsCollector("shop").record_llm_call(
            obsdeco.current_session(),
            provider="openai",
            model_name="gpt-4o",
            latency_ms=40.0,
            agent_name="Researcher",
        )

    @obsdeco.observe_session(project="shop")
    def job() -> str:
        research()
        research()
        session = obsdeco.current_session()
        assert session is not None
        return session.id

    session_id = job()
    obsdeco.flush()

    (project_time,) = obsdeco.report("shop").latency.agent_time
    (session_time,) = obsdeco.get_report(session_id).latency.agent_time
    assert project_time.agent_name == "Researcher"
    assert project_time.invocations == 2
    assert project_time.llm_ms == pytest.approx(80.0)
    assert project_time.wall_ms == pytest.approx(session_time.wall_ms, abs=0.01)
    assert "Researcher" in str(obsdeco.report("shop")).split("Agent time")[1]


def test_a_store_written_before_rollups_is_upgraded_on_open(configured):
    _record_spread()
    before = obsdeco.report("shop").model_dump()
    engine = sqlalchemy.create_engine(configured)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"DROP TABLE {VERSION_TABLE}"))
        connection.execute(sqlalchemy.text("DROP TABLE call_rollups"))
        connection.execute(sqlalchemy.text("DROP TABLE request_hashes"))
        connection.execute(sqlalchemy.text("ALTER TABLE llm_calls DROP COLUMN repeated"))
    engine.dispose()

    obsdeco.configure(project="test", database_url=configured)
    after = obsdeco.report("shop").model_dump()

    assert after == before


def test_rollups_of_an_earlier_key_are_rebuilt_on_open(configured):
    _record_spread()
    before = obsdeco.report("shop").model_dump()
    added = {"cache_hit", "routed_from", "shadow_model"}
    earlier = sqlalchemy.Table(
        "call_rollups",
        sqlalchemy.MetaData(),
        *(
            sqlalchemy.Column(
                column.name, column.type, primary_key=column.primary_key, nullable=False
            )
            for column in schema.call_rollups.columns
            if column.name not in added
        ),
    )
    stale = {column.name: 0 for column in earlier.columns} | {
        "project_name": "shop",
        "hour": BASE,
        "provider": "openai",
        "provider_name": "openai",
        "model": "gpt-4o",
        "requested_model": "gpt-4o",
        "agent_name": "",
        "operation": "",
        "success": True,
        "error_type": "",
        "tokens_known": True,
        "long_prompt": False,
        "repeated": False,
        "calls": 999,
        "latency_histogram": b"",
        "first_token_histogram": b"",
    }
    engine = sqlalchemy.create_engine(configured)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"DROP TABLE {VERSION_TABLE}"))
        connection.execute(sqlalchemy.text("DROP TABLE call_rollups"))
        earlier.create(connection)
        connection.execute(earlier.insert(), [stale])
    engine.dispose()

    obsdeco.configure(project="test", database_url=configured)
    after = obsdeco.report("shop").model_dump()

    assert after == before
    assert after["cache"]["hits"] == 13
    engine = sqlalchemy.create_engine(configured)
    columns = {column["name"] for column in sqlalchemy.inspect(engine).get_columns("call_rollups")}
    engine.dispose()
    assert added <= columns


def test_calls_imported_by_sql_are_counted_after_rebuild_rollups(configured):
    _record_spread()
    before = obsdeco.report("shop")
    engine = sqlalchemy.create_engine(configured)
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text(
                "INSERT INTO llm_calls (id, session_id, project_name, timestamp, provider, model,"
                " latency_ms, streamed, success, retries, rate_limited_retries, metadata,"
                " prompt_tokens, completion_tokens)"
                " SELECT 'z' || substr(id, 2), session_id, project_name, timestamp, provider,"
                " model,"
                " latency_ms, streamed, success, retries, rate_limited_retries, metadata,"
                " prompt_tokens, completion_tokens FROM llm_calls"
            )
        )
    engine.dispose()
    storage = SQLAlchemyStorage(configured)
    storage.rebuild_rollups()
    storage.close()

    after = obsdeco.report("shop")

    assert after.totals.calls == 2 * before.totals.calls
    assert after.totals.prompt_tokens == 2 * before.totals.prompt_tokens


def test_writers_of_several_processes_add_to_the_same_hour(configured):
    """Two stores (two engines, as two processes have) write the same new rollup rows at once."""
    stores = [SQLAlchemyStorage(configured) for _ in range(2)]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def write(store: SQLAlchemyStorage) -> None:
        try:
            start.wait()
            for _ in range(20):
                calls = [
                    LLMCall(
                        session_id="s" * 32,
                        project_name="race",
                        provider="openai",
                        model="gpt-4o",
                        latency_ms=10.0,
                        prompt_tokens=1,
                        completion_tokens=1,
                        timestamp=BASE,
                    )
                    for _ in range(50)
                ]
                store.write(WriteBatch(calls=calls))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=write, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()

    assert errors == []
    assert obsdeco.report("race").totals.calls == 2_000


_STATISTICS = sqlalchemy.text(
    "SELECT s.stxname, array_agg(a.attname::text ORDER BY a.attnum) "
    "FROM pg_statistic_ext AS s "
    "JOIN pg_attribute AS a ON a.attrelid = s.stxrelid AND a.attnum = ANY(s.stxkeys) "
    "WHERE s.stxnamespace = current_schema()::regnamespace GROUP BY s.stxname ORDER BY 1"
)


def test_postgresql_keeps_distinct_counts_of_the_report_dimensions_together(postgres_url):
    storage = SQLAlchemyStorage(postgres_url)
    storage.count_sessions()
    with storage.engine.begin() as connection:
        made = connection.execute(_STATISTICS).all()
    schema_setup.downgrade_schema(storage.engine, "0005")  # a store made before them
    with storage.engine.begin() as connection:
        assert connection.execute(_STATISTICS).all() == []
    storage.close()
    reopened = SQLAlchemyStorage(postgres_url)
    reopened.count_sessions()
    with reopened.engine.connect() as connection:
        remade = connection.execute(_STATISTICS).all()
    reopened.close()

    expected = [
        (
            "call_rollups_groups_a",
            [
                "provider",
                "provider_name",
                "model",
                "requested_model",
                "agent_name",
                "operation",
                "success",
            ],
        ),
        (
            "call_rollups_groups_b",
            [
                "error_type",
                "tokens_known",
                "long_prompt",
                "repeated",
                "cache_hit",
                "routed_from",
                "shadow_model",
            ],
        ),
    ]
    assert [tuple(row) for row in made] == expected
    assert [tuple(row) for row in remade] == expected
