"""The dashboard's pages (streamlit AppTest) on a seeded store: shown values equal the reports';
names carrying Markdown or HTML are shown as text; bad query parameters and wrong passwords; and,
as real processes, `streamlit run` in headless Chromium and `obsdeco dashboard` under signals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import pandas as pd
import pytest

pytest.importorskip("streamlit", reason="the dashboard extra is not installed")

from streamlit.testing.v1 import AppTest

import obsdeco
from obsdeco.dashboard import gate
from obsdeco.dashboard.formatting import ms, plural, rounded_ms
from obsdeco.dashboard.gate import MAX_DELAY_S, Attempt, PasswordGate
from obsdeco.dashboard.server import streamlit_command
from obsdeco.testing import Reply
from tests.conftest import IN_CI
from tests.test_savings import _record_engine_calls

REPOSITORY = Path(__file__).parents[1]
APP = str(REPOSITORY / "dashboard" / "app.py")


def _record(collector: obsdeco.MetricsCollector, session: obsdeco.Session, **fields) -> None:
    values = {
        "provider": "openai",
        "model_name": "gpt-4o",
        "latency_ms": 800.0,
        "prompt_tokens": 1_000,
        "completion_tokens": 100,
        "agent_name": "Writer",
    }
    collector.record_llm_call(session, **(values | fields))


@pytest.fixture
def seeded(sqlite_url: str) -> str:
    """Project 'shop': two sessions in the last day, one the day before; project 'blog': one."""
    return _seed(sqlite_url)


@pytest.fixture
def seeded_anywhere(database_url: str) -> str:
    """The seeded store on SQLite, then on PostgreSQL."""
    return _seed(database_url)


def _seed(url: str) -> str:
    obsdeco.configure(database_url=url)
    now = datetime.now(UTC)
    shop = obsdeco.MetricsCollector("shop")
    alpha = shop.start_session("alpha-ticket")
    for hours_ago in (1, 2, 3):
        _record(shop, alpha, timestamp=now - timedelta(hours=hours_ago))
    _record(
        shop,
        alpha,
        provider="anthropic",
        model_name="claude-sonnet-4-5",
        agent_name="Planner",
        latency_ms=300.0,
        success=False,
        error_type="rate_limit",
        timestamp=now - timedelta(hours=2),
    )
    shop.end_session(alpha)
    beta = shop.start_session("beta-ticket")
    _record(shop, beta, latency_ms=1_200.0, timestamp=now - timedelta(hours=5))
    shop.end_session(beta)
    older = shop.start_session("older-ticket")
    _record(shop, older, timestamp=now - timedelta(hours=30))
    shop.end_session(older)
    blog = obsdeco.MetricsCollector("blog")
    post = blog.start_session("post")
    _record(blog, post, timestamp=now - timedelta(hours=1))
    blog.end_session(post)
    obsdeco.flush()
    return url


def _run(**params: str) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=30)
    for name, value in params.items():
        app.query_params[name] = value
    app.run()
    assert not app.exception, [error.message for error in app.exception]
    return app


def _frame(app: AppTest, first_column: str) -> pd.DataFrame:
    """The table whose first column is named `first_column`."""
    (found,) = [f.value for f in app.dataframe if f.value.columns[0] == first_column]
    return found


def _metrics(app: AppTest) -> dict[str, tuple[str, str | None]]:
    return {metric.label: (metric.value, metric.delta) for metric in app.metric}


def test_overview_shows_the_project_reports_numbers(seeded):
    day_ago = datetime.now(UTC) - timedelta(hours=24)
    expected = obsdeco.report("shop", since=day_ago)
    before = obsdeco.report("shop", until=day_ago)

    shown = _metrics(_run(project="shop", range="24h"))

    # 4 successful gpt-4o calls: 4 x (1,000 x $2.50/M + 100 x $10/M) = $0.014; the failed
    # claude call is priced on its tokens as well: 1,000 x $3/M + 100 x $15/M = $0.0045.
    assert expected.cost.total_usd == pytest.approx(0.0185)
    assert shown["Cost"] == (
        f"${expected.cost.total_usd:,.4f}",
        f"{expected.cost.total_usd - before.cost.total_usd:+,.4f}",
    )
    assert shown["Calls"] == ("5", "+4")
    assert shown["Tokens"][0] == f"{expected.totals.total_tokens:,}"
    assert shown["Success rate"][0] == "80.0%"
    assert shown["p95 latency"][0] == f"{expected.latency.p95_ms:,.0f} ms"


def test_model_and_agent_filters_narrow_every_number(seeded):
    gpt = _metrics(_run(project="shop", range="24h", model="gpt-4o"))
    planner = _metrics(_run(project="shop", range="24h", agent="Planner"))

    assert gpt["Calls"][0] == "4"
    assert gpt["Success rate"][0] == "100.0%"
    assert planner["Calls"][0] == "1"
    assert planner["Cost"][0] == "$0.0045"


def test_the_url_keeps_the_filters(seeded):
    app = _run(project="shop", range="30d", model="gpt-4o", page="Sessions")

    assert app.sidebar.radio[0].value == "Sessions"
    assert [box.value for box in app.sidebar.selectbox] == ["shop", "30d", "gpt-4o", "(all agents)"]

    app.sidebar.selectbox[0].select("blog").run()
    app.sidebar.selectbox[1].select("24h").run()

    assert app.query_params["project"] in ("blog", ["blog"])
    assert app.query_params["range"] in ("24h", ["24h"])
    assert app.query_params["page"] in ("Sessions", ["Sessions"])


def test_sessions_are_listed_searched_and_drilled_into(seeded):
    listed = _run(project="shop", range="7d", page="Sessions")
    table = listed.dataframe[0].value

    # Newest first: the sessions were started in this order, just now.
    assert list(table["Name"]) == ["older-ticket", "beta-ticket", "alpha-ticket"]
    assert list(table["Calls"]) == [1, 1, 4]
    assert list(table["Errors"]) == [0, 0, 1]
    assert listed.caption[0].value == "3 sessions · page 1 of 1"

    searched = _run(project="shop", range="7d", page="Sessions", q="BETA")
    assert list(searched.dataframe[0].value["Name"]) == ["beta-ticket"]
    assert searched.caption[0].value == "1 session · page 1 of 1"

    by_cost = _run(project="shop", range="7d", page="Sessions", sort="cost_usd", asc="1")
    assert list(by_cost.dataframe[0].value["Name"])[-1] == "alpha-ticket"


def test_the_drilldown_shows_the_reports_sections_as_tables(seeded):
    listed = _run(project="shop", range="7d", page="Sessions")
    session_id = listed.dataframe[0].value["Session id"][2]
    report = obsdeco.get_report(session_id)

    opened = _run(project="shop", range="7d", page="Sessions", session=session_id)

    assert f"alpha-ticket · {session_id}" in [text.value for text in opened.text]
    totals = _metrics(opened)
    # 3 x gpt-4o (1,000 x $2.50/M + 100 x $10/M) + claude (1,000 x $3/M + 100 x $15/M)
    assert totals["Cost"][0] == f"${report.totals.cost_usd:,.4f}" == "$0.0150"
    assert totals["Calls"][0] == "4"
    assert totals["Errors"][0] == "1"
    assert totals["Success rate"][0] == "75.0%"
    # 3 calls of 800 ms and one of 300 ms: p50 800 ms, average 675 ms.
    assert totals["p50"][0] == ms(report.latency.p50_ms) == "800 ms"
    assert totals["Average"][0] == "675 ms"
    facts, tokens, errors, calls = (
        _frame(opened, first) for first in ("", "By", "Error", "Time (UTC)")
    )
    assert list(facts["Value"])[:2] == ["shop", "ok"]
    by_model = tokens[tokens["By"] == "model"].set_index("Name")
    assert by_model.loc["gpt-4o", "Total"] == 3_300
    assert by_model.loc["claude-sonnet-4-5", "Calls"] == 1
    assert errors.to_dict("records") == [{"Error": "rate_limit", "Calls": 1}]
    assert len(calls) == 4
    assert sorted(calls["Model"]) == ["claude-sonnet-4-5", "gpt-4o", "gpt-4o", "gpt-4o"]
    assert sorted(calls["Error"]) == ["", "", "", "rate_limit"]
    assert "1 error in 4 calls, 0 retries (0 rate-limited)" in [t.value for t in opened.text]
    assert [button.label for button in opened.download_button] == ["Download the text report"]
    timeline = json.loads(opened.get("vega_lite_chart")[0].proto.spec)
    lanes = timeline["layer"][0]["encoding"]["y"]
    assert lanes["field"] == "lane"
    assert lanes["axis"]["labelLimit"] == 0  # "Planner · claude-sonnet-4-5" is not cut
    assert not any(str(report) in block.value for block in opened.markdown)


def test_models_and_agents_page_shows_the_report(seeded):
    app = _run(project="shop", range="7d", page="Models & agents")
    expected = obsdeco.report("shop")

    models = app.dataframe[0].value.set_index("Name")
    agents = app.dataframe[1].value.set_index("Name")

    assert models["Cost (USD)"].to_dict() == pytest.approx(expected.cost.by_model)
    assert models["Errors"].to_dict() == {"claude-sonnet-4-5": 1, "gpt-4o": 0}
    # (800 + 800 + 800 + 1,200 + 800) / 5 calls, in whole milliseconds.
    assert models.loc["gpt-4o", "Average latency (ms)"] == 880.0
    assert agents["Cost (USD)"].to_dict() == pytest.approx(expected.cost.by_agent)
    assert agents["Errors"].to_dict() == {"Planner": 1, "Writer": 0}
    shown = " ".join(text.value for text in app.text)
    for suggestion in expected.suggestions:
        assert suggestion.message in shown


def test_the_providers_table_groups_by_provider_name(seeded):
    shop = obsdeco.MetricsCollector("shop")
    session = shop.start_session("via-groq")
    _record(
        shop, session, provider_name="groq", model_name="llama-3.3-70b-versatile", latency_ms=50.0
    )
    shop.end_session(session)
    obsdeco.flush()

    app = _run(project="shop", range="7d", page="Models & agents")

    providers = app.dataframe[2].value.set_index("Name")
    expected = obsdeco.report("shop")
    # 1,000 x $0.59/M + 100 x $0.79/M at Groq
    assert expected.cost.by_provider["groq"] == pytest.approx(0.000669, abs=1e-12)
    assert providers["Cost (USD)"].to_dict() == pytest.approx(expected.cost.by_provider)
    assert providers["Calls"].to_dict() == {"anthropic": 1, "groq": 1, "openai": 5}
    assert providers.loc["groq", "Average latency (ms)"] == pytest.approx(50.0)
    assert providers["Errors"].to_dict() == {"anthropic": 1, "groq": 0, "openai": 0}


def test_the_savings_page_shows_the_savings_view(database_url):
    obsdeco.configure(database_url=database_url)
    _record_engine_calls()
    expected = obsdeco.savings("shop", since=datetime(2026, 3, 1, tzinfo=UTC))

    app = _run(
        project="shop", page="Savings", range="custom", since="2026-03-01", until="2026-03-04"
    )

    shown = _metrics(app)
    assert shown["Saved"][0] == "$0.0302"  # 3 hits x $0.0035 + 3 routed x $0.00658
    assert shown["By the response cache"][0] == "$0.0105"
    assert shown["By the router"][0] == "$0.0197"
    assert shown["Shadow rules would save"][0] == "$0.0033"
    assert shown["Suggestions could still save"][0] == (f"${expected.remaining_potential_usd:,.4f}")
    assert (
        app.caption[0].value == "3 calls answered by the cache, 3 calls routed to a cheaper model."
    )
    days = _frame(app, "Day (UTC)")
    assert list(days["Day (UTC)"]) == ["2026-03-02", "2026-03-03"]
    assert list(days["Cache hits"]) == [2, 1]
    assert list(days["Routed calls"]) == [3, 0]
    assert list(days["Cache (USD)"]) == pytest.approx([d.cache_saved_usd for d in expected.days])
    rules = _frame(app, "Rule").set_index("Rule")
    assert rules.loc["gpt-4o -> gpt-4o-mini", "Routed calls"] == 3
    assert rules.loc["gpt-4o -> gpt-4o-mini", "Shadow calls"] == 2
    assert rules.loc["gpt-4o -> gpt-4o-mini", "Success rate"] == pytest.approx(2 / 3)
    texts = [text.value for text in app.text]
    assert "3 hits, 1 miss (hit rate 75.0%), saved $0.0105" in texts
    shown_text = " ".join(texts)
    for suggestion in expected.suggestions:
        assert suggestion.message in shown_text
    spec = json.loads(app.get("vega_lite_chart")[0].proto.spec)
    assert spec["encoding"]["x"]["timeUnit"] == "utcyearmonthdate"


def test_the_savings_page_without_the_engine_says_how_to_turn_it_on(seeded):
    app = _run(project="shop", page="Savings")

    assert _metrics(app)["Saved"][0] == "$0.0000"
    assert [info.value for info in app.info] == [
        "Nothing saved in this range: make calls inside obsdeco.cache(ttl_s=...) or configure "
        "routes=[obsdeco.Route(...)]."
    ]


def _spend_on_budgets(client, provider, url: str, budgets: list[obsdeco.Budget]) -> float:
    """Two gpt-4o calls of 1,000 + 100 tokens in project 'shop' under `budgets`; their cost."""
    provider.default_reply = Reply.default(input_tokens=1_000, output_tokens=100)
    obsdeco.configure(project="shop", database_url=url, budgets=budgets)
    for _ in range(2):
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], max_tokens=50
        )
    obsdeco.flush()
    return 2 * (1_000 * 2.5 + 100 * 10) / 1e6


def test_the_budgets_page_shows_the_budgets_and_the_stores_accounts(
    patched, provider, openai_client, database_url
):
    daily = obsdeco.Budget(
        limit_usd=20.0, scope="project", window="1d", soft_usd=15.0, name="daily"
    )
    shop = obsdeco.Budget(limit_usd=5.0, scope="project", project="shop")
    writer = obsdeco.Budget(limit_usd=1.0, scope="agent", agent="Writer")
    cost = _spend_on_budgets(openai_client, provider, database_url, [daily, shop, writer])

    app = _run(project="shop", page="Budgets")

    configured = _frame(app, "Budget")
    assert configured.drop(columns="Soft limit (USD)").to_dict("records") == [
        {"Budget": "daily", "Scope": "project", "For": "each project", "Window": "1d",
         "Limit (USD)": 20.0},
        {"Budget": "project shop $5", "Scope": "project", "For": "shop", "Window": "none",
         "Limit (USD)": 5.0},
        {"Budget": "agent Writer $1", "Scope": "agent", "For": "Writer", "Window": "none",
         "Limit (USD)": 1.0},
    ]  # fmt: skip
    assert list(configured["Soft limit (USD)"].fillna(0.0)) == [15.0, 0.0, 0.0]
    accounts = _frame(app, "Account")
    today = datetime.now(UTC).strftime("%Y-%m-%d 00:00")
    assert accounts.drop(columns=["Spent (USD)", "Used"]).to_dict("records") == [
        {"Account": "daily | shop", "Window from (UTC)": today, "Reserved (USD)": 0.0,
         "Limit (USD)": 20.0},
        {"Account": "project shop $5 | shop", "Window from (UTC)": "no window",
         "Reserved (USD)": 0.0, "Limit (USD)": 5.0},
    ]  # fmt: skip
    assert list(accounts["Spent (USD)"]) == pytest.approx([cost, cost], rel=1e-12)
    assert list(accounts["Used"]) == pytest.approx([cost / 20.0, cost / 5.0], rel=1e-12)


def test_the_budgets_page_without_budgets_says_how_to_set_them(seeded):
    app = _run(project="shop", page="Budgets")

    assert [info.value for info in app.info] == [
        "No budget is configured here: configure(budgets=[obsdeco.Budget(...)]), or "
        "@obsdeco.observe_session(budget_usd=...) for one session.",
        "No project budget has reserved anything in this store yet.",
    ]


def test_a_budget_named_with_markdown_is_shown_as_text(
    patched, provider, openai_client, sqlite_url
):
    name = "![b](http://127.0.0.1:9/pixel.png) <b>bold</b> ```"
    budget = obsdeco.Budget(limit_usd=1.0, scope="project", name=name)
    _spend_on_budgets(openai_client, provider, sqlite_url, [budget])

    app = _run(project="shop", page="Budgets")

    assert list(_frame(app, "Budget")["Budget"]) == [name]
    assert list(_frame(app, "Account")["Account"]) == [f"{name} | shop"]
    for kind in MARKDOWN_ELEMENTS:
        for element in app.get(kind):
            assert "pixel.png" not in element.value


def test_the_drilldown_shows_the_cache_and_routing_of_the_session(sqlite_url):
    obsdeco.configure(database_url=sqlite_url)
    session, _ = _record_engine_calls()  # started now, its calls timestamped in March

    app = _run(project="shop", page="Sessions", range="7d", session=session.id)

    assert "3 hits, 1 miss (hit rate 75.0%), saved $0.0105" in [t.value for t in app.text]
    assert list(_frame(app, "Rule")["Rule"]) == ["gpt-4o -> gpt-4o-mini"]


def test_all_projects_and_an_empty_range(seeded):
    everything = _metrics(_run(project="(all projects)", range="24h"))
    assert everything["Calls"][0] == "6"

    nothing = _run(project="blog", range="custom", since="2020-01-01", until="2020-01-02")
    assert [info.value for info in nothing.info] == ["No calls in this range."]


def test_live_refresh_is_kept_in_the_url_and_new_calls_appear(seeded):
    import streamlit as st

    app = _run(project="shop", range="24h", refresh="5")
    assert app.sidebar.toggle[0].value is True
    assert app.sidebar.select_slider[0].value == 5
    assert _metrics(app)["Calls"][0] == "5"

    shop = obsdeco.MetricsCollector("shop")
    late = shop.start_session("late")
    _record(shop, late)
    shop.end_session(late)
    obsdeco.flush()
    st.cache_data.clear()  # what the cache's 10 s time-to-live does
    app.run()

    assert _metrics(app)["Calls"][0] == "6"


def test_an_empty_store_says_how_to_start(sqlite_url):
    obsdeco.configure(database_url=sqlite_url)

    app = _run()

    assert app.info[0].value == "Nothing recorded yet in this store."
    assert "obsdeco.patch_all()" in app.markdown[0].value
    assert not app.metric


def test_bad_query_parameters_fall_back_and_are_named(seeded):
    app = _run(
        project="nope",
        range="forever",
        page="Nope",
        model="gpt-9",
        agent="Nobody",
        refresh="abc",
    )

    assert app.sidebar.radio[0].value == "Overview"
    assert [box.value for box in app.sidebar.selectbox] == [
        "blog",  # the first project
        "7d",
        "(all models)",
        "(all agents)",
    ]
    assert app.sidebar.toggle[0].value is False
    assert [warning.value for warning in app.warning] == [
        "Ignored in the URL: page (no such page); project (no such project in this store); "
        "range (not 1h, 24h, 7d, 30d, 90d or custom); model (no calls to it in this project "
        "and range); agent (no calls by it in this project and range); refresh (not 5, 10, "
        "30, 60 or 300 seconds)."
    ]
    assert _metrics(app)["Calls"][0] == "1"


@pytest.mark.parametrize(
    "params",
    [
        {"refresh": "7"},
        {"refresh": "-5"},
        {"refresh": "²", "page": "Sessions", "p": "²"},
        {"range": "custom", "since": "yesterday", "until": "2020-13-45"},
        {"range": "custom", "since": "9999-12-31", "until": "0001-01-01"},
        {"range": "custom", "since": "2026-01-02", "until": "2026-01-01"},
        {"page": "Sessions", "p": "abc", "sort": "drop table", "session": "no-such-id"},
        {"page": "Sessions", "p": "99999999999999999999", "q": "a\x00b", "session": "\x00"},
    ],
)
def test_no_query_parameter_ends_in_a_traceback(seeded_anywhere, params):
    app = _run(project="shop", **params)

    assert app.title[0].value == "obsdeco"
    assert not app.error


def test_the_custom_range_keeps_its_days_across_reruns(seeded):
    app = _run(project="shop", range="custom", since="2020-01-01", until="2020-01-02")
    app.run()

    assert app.sidebar.date_input[0].value == (
        datetime(2020, 1, 1).date(),
        datetime(2020, 1, 2).date(),
    )
    assert app.query_params["until"] in ("2020-01-02", ["2020-01-02"])


def test_singular_and_plural_and_no_none_for_zero(seeded):
    blog = _run(project="blog", range="7d", page="Sessions")
    assert blog.caption[0].value == "1 session · page 1 of 1"

    shop_agents = _run(project="shop", range="7d", page="Models & agents").dataframe[1].value
    assert shop_agents["Errors"].isna().sum() == 0

    assert [plural(n, "call") for n in (0, 1, 2, 1_000)] == [
        "0 calls",
        "1 call",
        "2 calls",
        "1,000 calls",
    ]
    assert plural(1, "retry", "retries") == "1 retry"
    assert plural(3, "retry", "retries") == "3 retries"
    assert [rounded_ms(value) for value in (None, 3.14159, 812.5001, 812.49)] == [
        None,
        3.1,
        813.0,
        812.0,
    ]
    assert [ms(value) for value in (None, 0.456, 812.49, 12_345.6)] == [
        "-",
        "0.5 ms",
        "812 ms",
        "12,346 ms",
    ]


def test_charts_of_a_single_hour_draw_bars_spanning_it(sqlite_url):
    obsdeco.configure(database_url=sqlite_url)
    collector = obsdeco.MetricsCollector("one-hour")
    session = collector.start_session("only")
    _record(collector, session)
    collector.end_session(session)
    obsdeco.flush()

    app = _run(project="one-hour", range="24h")

    specs = [json.loads(chart.proto.spec) for chart in app.get("vega_lite_chart")]
    assert [spec["mark"]["type"] for spec in specs] == ["bar", "bar", "line"]
    assert [spec["encoding"]["x"]["timeUnit"] for spec in specs] == ["utcyearmonthdatehours"] * 3
    assert specs[2]["mark"]["point"]  # a single hour is a visible point


@pytest.fixture
def gate_clock(monkeypatch) -> list[float]:
    """A fresh password gate for the app, on a clock the test moves (seconds, its first item)."""
    now = [1_000.0]
    monkeypatch.setattr(gate, "SERVER_GATE", PasswordGate(clock=lambda: now[0]))
    return now


TOO_SOON = "Too soon after a wrong password: try again in 1 second"


def _submit(app: AppTest, password: str) -> AppTest:
    app.text_input[0].input(password)
    app.button[0].click().run()
    return app


def test_the_password_gate_slows_down_wrong_passwords(seeded, monkeypatch, gate_clock):
    import streamlit as st

    monkeypatch.setenv("OBSDECO_DASHBOARD_PASSWORD", "s3cret")

    locked = _run(project="shop")
    assert not locked.metric
    assert not locked.sidebar.selectbox  # nothing of the store before the password

    _submit(locked, "wrong")
    assert locked.error[0].value == "Wrong password. The next attempt is accepted in 1 second."
    _submit(locked, "s3cret")  # too soon: not even compared
    assert locked.error[0].value.startswith(TOO_SOON)
    assert not locked.metric
    st.cache_data.clear()  # what any browser can ask Streamlit to do...
    st.cache_resource.clear()
    _submit(locked, "s3cret")  # ...does not reopen the gate
    assert locked.error[0].value.startswith(TOO_SOON)

    gate_clock[0] += 1
    _submit(locked, "wrong again")
    assert locked.error[0].value == "Wrong password. The next attempt is accepted in 2 seconds."
    gate_clock[0] += 2
    _submit(locked, "and again")
    assert locked.error[0].value == "Wrong password. The next attempt is accepted in 4 seconds."
    assert not locked.metric

    gate_clock[0] += 4
    _submit(locked, "s3cret")
    assert _metrics(locked)["Calls"][0] == "6"  # the default range, 7 days


def test_the_gate_doubles_its_delay_per_wrong_password_up_to_a_cap():
    now = [0.0]
    gate = PasswordGate(clock=lambda: now[0])
    delays = []
    for _ in range(12):
        assert gate.attempt("guess", "s3cret") is Attempt.WRONG
        delays.append(gate.wait_s())
        assert gate.attempt("s3cret", "s3cret") is Attempt.TOO_SOON
        now[0] += gate.wait_s()

    assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, MAX_DELAY_S, MAX_DELAY_S, MAX_DELAY_S]
    assert gate.failures == 12  # refused attempts are not counted
    assert gate.attempt("s3cret", "s3cret") is Attempt.OPEN
    assert gate.failures == 0
    assert gate.attempt("guess", "s3cret") is Attempt.WRONG
    assert gate.wait_s() == 1


# --- names that carry Markdown or HTML ----------------------------------------------------------


class _Pixels(BaseHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def pixels() -> Iterator[tuple[int, list[str]]]:
    """A local HTTP server counting every request it gets: the planted names point at it."""
    requests: list[str] = []
    handler = type("Counting", (_Pixels,), {"requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], requests
    server.shutdown()
    server.server_close()


def _planted_names(port: int) -> dict[str, str]:
    pixel = f"http://127.0.0.1:{port}/pixel.png"
    return {
        "project": f"shop ![p]({pixel}?project)",
        "session": f'<img src="{pixel}?session"> ```\nbroke out',
        "agent": f"![a]({pixel}?agent) **bold**",
        "model": f"gpt-4o<script>fetch('{pixel}?script')</script>",
        "metadata": f"![m]({pixel}?metadata)",
        "error": f'<img src="{pixel}?error" onerror="alert(1)">',
    }


@pytest.fixture
def planted(seeded: str, pixels: tuple[int, list[str]]) -> dict[str, str]:
    """Beside the seeded store: a project, session, agent and model named with Markdown/HTML."""
    names = _planted_names(pixels[0])
    collector = obsdeco.MetricsCollector(names["project"])
    session = collector.start_session(names["session"], metadata={"note": names["metadata"]})
    _record(collector, session, agent_name=names["agent"], model_name=names["model"])
    _record(
        collector,
        session,
        agent_name=names["agent"],
        success=False,
        error_type=names["error"],
        latency_ms=50.0,
    )
    collector.end_session(session, error=RuntimeError(names["error"]))
    obsdeco.flush()
    names["session_id"] = session.id
    return names


MARKDOWN_ELEMENTS = ("markdown", "caption", "subheader", "title", "header", "warning", "error")


def test_planted_markdown_and_html_in_names_are_shown_as_text(planted):
    pages = [
        _run(project=planted["project"], range="24h"),
        _run(project=planted["project"], range="24h", page="Models & agents"),
        _run(
            project=planted["project"],
            range="24h",
            page="Sessions",
            session=planted["session_id"],
        ),
    ]
    overview, models, drilldown = pages

    for app in pages:
        for kind in MARKDOWN_ELEMENTS:
            for element in app.get(kind):
                assert "pixel.png" not in element.value
                assert "```" not in element.value
    header = f"{planted['project']} · "
    assert any(text.value.startswith(header) for text in overview.text)
    assert overview.sidebar.selectbox[0].value == planted["project"]
    shown = models.dataframe[0].value
    assert planted["model"] in list(shown["Name"])
    assert planted["agent"] in list(models.dataframe[1].value["Name"])
    texts = [text.value for text in drilldown.text]
    assert f"{planted['session']} · {planted['session_id']}" in texts
    facts = _frame(drilldown, "").set_index("")
    # Shown as text, as stored: error messages are scrubbed (the loopback address is an IP).
    stored_error = planted["error"].replace("127.0.0.1", "<IP_ADDRESS>")
    assert facts.loc["Error", "Value"] == f"RuntimeError: {stored_error}"
    assert drilldown.json[0].value == json.dumps({"note": planted["metadata"]})


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _chromium() -> str:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    reason = "no Chromium found (apt-get install chromium): the browser test needs one"
    if IN_CI:
        pytest.fail(f"{reason}; in CI it must run")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _listening_addresses(port: int) -> set[str]:
    """The local addresses (hexadecimal, as /proc/net/tcp* write them) listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


LOOPBACK = "0100007F"


def _wait_until_serving(process: subprocess.Popen[str]) -> None:
    """Read the server's output up to Streamlit's "You can now view"; killed after 60 s."""
    watchdog = threading.Timer(60, process.kill)
    watchdog.start()
    try:
        assert process.stdout is not None
        for line in process.stdout:  # ends if the watchdog kills a server that never starts
            if "You can now view" in line:
                return
        pytest.fail("streamlit did not start within 60 s")
    finally:
        watchdog.cancel()


@pytest.fixture
def served(planted: dict[str, str], seeded: str, tmp_path: Path) -> Iterator[str]:
    """`streamlit run dashboard/app.py` as the README gives it, from another directory and
    without an address: the app's own .streamlit/config.toml must keep it on loopback."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", APP, "--server.port", str(port)],
        env=dict(os.environ, OBSDECO_DATABASE_URL=seeded, STREAMLIT_SERVER_HEADLESS="true"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_until_serving(server)
        assert _listening_addresses(port) == {LOOPBACK}
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_browser_sees_the_seeded_numbers_and_planted_names_load_nothing(
    served, planted, pixels, tmp_path
):
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = _chromium()
    _, pixel_requests = pixels
    expected_cost = f"${obsdeco.report('shop').cost.total_usd:,.4f}"
    report = obsdeco.get_report(planted["session_id"])
    elsewhere: list[str] = []

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on(
                "request",
                lambda request: (
                    None if request.url.startswith(served) else elsewhere.append(request.url)
                ),
            )
            page.goto(f"{served}/?project=shop&range=7d")
            cost = page.get_by_test_id("stMetricValue").first
            cost.wait_for(timeout=30_000)
            assert cost.inner_text() == expected_cost

            views = {
                "overview": ({}, "stMetricValue"),
                "models": ({"page": "Models & agents"}, "stDataFrame"),
                "drilldown": (
                    {"page": "Sessions", "session": planted["session_id"]},
                    "stDownloadButton",
                ),
            }
            for name, (params, shown) in views.items():
                query = urlencode({"project": planted["project"], "range": "24h", **params})
                page.goto(f"{served}/?{query}")
                page.get_by_test_id(shown).first.wait_for(timeout=30_000)
                page.wait_for_load_state("networkidle")
                page.screenshot(path=tmp_path / f"{name}.png", full_page=True)
            page.get_by_test_id("stSelectbox").first.click()  # the projects, as options
            page.get_by_role("option").filter(has_text=planted["project"]).wait_for()
            page.keyboard.press("Escape")
            heading = page.get_by_test_id("stText").filter(has_text=planted["session_id"])
            shown_heading = heading.first.inner_text()
            with page.expect_download() as download:
                page.get_by_text("Download the text report").click()
            downloaded = Path(download.value.path()).read_text(encoding="utf-8")
        finally:
            browser.close()

    assert shown_heading == f"{planted['session']} · {planted['session_id']}"
    assert downloaded == str(report)
    assert pixel_requests == []
    assert elsewhere == []


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_obsdeco_dashboard_stops_its_server(seeded, stop):
    port = _free_port()
    dashboard_command = ["obsdeco.cli", "dashboard", "--database-url", seeded, "--port", str(port)]
    process = subprocess.Popen(
        [sys.executable, "-m", *dashboard_command],
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    children: list[int] = []
    try:
        _wait_until_serving(process)
        children = [
            int(pid)
            for pid in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        ]
        assert len(children) == 1
        environment = Path(f"/proc/{children[0]}/environ").read_bytes().split(b"\0")
        assert f"OBSDECO_DATABASE_URL={seeded}".encode() in environment  # the store given
        assert _listening_addresses(port) == {LOOPBACK}  # 127.0.0.1 unless --host says otherwise

        process.send_signal(stop)

        assert process.wait(timeout=30) == 0
        assert not Path(f"/proc/{children[0]}").exists()  # no orphan left serving
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
            pass
    finally:
        for pid in children:
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
        process.kill()
        process.wait()


def test_obsdeco_dashboard_hides_the_deploy_menu_and_binds_the_host_given():
    command = streamlit_command("app.py", "0.0.0.0", 8600)

    assert command[1:5] == ["-m", "streamlit", "run", "app.py"]
    options = dict(zip(command[5::2], command[6::2], strict=True))
    assert options == {
        "--server.address": "0.0.0.0",
        "--server.port": "8600",
        "--server.headless": "true",
        "--browser.gatherUsageStats": "false",
        "--client.toolbarMode": "viewer",
    }
