"""The dashboard's pages (streamlit AppTest) on a seeded store: shown values equal the reports'."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

pytest.importorskip("streamlit", reason="the dashboard extra is not installed")

from streamlit.testing.v1 import AppTest

import obsdeco
from obsdeco import cli
from tests.conftest import IN_CI

APP = str(Path(__file__).parents[1] / "dashboard" / "app.py")


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
    obsdeco.configure(database_url=sqlite_url)
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
    return sqlite_url


def _run(**params: str) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=30)
    for name, value in params.items():
        app.query_params[name] = value
    app.run()
    assert not app.exception, [error.message for error in app.exception]
    return app


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
    assert list(table["name"]) == ["older-ticket", "beta-ticket", "alpha-ticket"]
    assert list(table["calls"]) == [1, 1, 4]

    searched = _run(project="shop", range="7d", page="Sessions", q="BETA")
    assert list(searched.dataframe[0].value["name"]) == ["beta-ticket"]

    by_cost = _run(project="shop", range="7d", page="Sessions", sort="cost_usd", asc="1")
    assert list(by_cost.dataframe[0].value["name"])[-1] == "alpha-ticket"

    session_id = table["id"][2]
    report = obsdeco.get_report(session_id)
    opened = _run(project="shop", range="7d", page="Sessions", session=session_id)
    assert any(session_id in header.value for header in opened.subheader)
    assert any(str(report) in block.value for block in opened.markdown)
    calls = opened.dataframe[1].value
    assert len(calls) == 4
    assert sorted(calls["model"]) == ["claude-sonnet-4-5", "gpt-4o", "gpt-4o", "gpt-4o"]


def test_models_and_agents_page_shows_the_report(seeded):
    app = _run(project="shop", range="7d", page="Models & agents")
    expected = obsdeco.report("shop")

    models = app.dataframe[0].value.set_index("name")
    agents = app.dataframe[1].value.set_index("name")

    assert models["cost (USD)"].to_dict() == pytest.approx(expected.cost.by_model)
    assert models["errors"].to_dict() == {"claude-sonnet-4-5": 1, "gpt-4o": 0}
    assert models.loc["gpt-4o", "avg latency (ms)"] == pytest.approx(880.0)
    assert agents["cost (USD)"].to_dict() == pytest.approx(expected.cost.by_agent)
    shown = " ".join(block.value for block in app.markdown)
    for suggestion in expected.suggestions:
        assert suggestion.kind in shown


def test_the_providers_table_groups_by_provider_name(seeded):
    shop = obsdeco.MetricsCollector("shop")
    session = shop.start_session("via-groq")
    _record(
        shop, session, provider_name="groq", model_name="llama-3.3-70b-versatile", latency_ms=50.0
    )
    shop.end_session(session)
    obsdeco.flush()

    app = _run(project="shop", range="7d", page="Models & agents")

    providers = app.dataframe[2].value.set_index("name")
    expected = obsdeco.report("shop")
    # 1,000 x $0.59/M + 100 x $0.79/M at Groq
    assert expected.cost.by_provider["groq"] == pytest.approx(0.000669, abs=1e-12)
    assert providers["cost (USD)"].to_dict() == pytest.approx(expected.cost.by_provider)
    assert providers["calls"].to_dict() == {"anthropic": 1, "groq": 1, "openai": 5}
    assert providers.loc["groq", "avg latency (ms)"] == pytest.approx(50.0)


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


def test_the_password_gate(seeded, monkeypatch):
    monkeypatch.setenv("OBSDECO_DASHBOARD_PASSWORD", "s3cret")

    locked = _run(project="shop")
    assert not locked.metric
    locked.text_input[0].input("wrong").run()
    assert locked.error[0].value == "Wrong password."
    assert not locked.metric
    locked.text_input[0].input("s3cret").run()
    assert _metrics(locked)["Calls"][0] == "6"  # the default range, 7 days


def test_the_cli_serves_the_app_on_the_store_given(seeded, monkeypatch):
    launched: list[tuple[list[str], dict[str, str]]] = []

    def call(command: list[str], env: dict[str, str]) -> int:
        launched.append((command, env))
        return 0

    monkeypatch.setattr(subprocess, "call", call)

    assert cli.main(["dashboard", "--database-url", seeded, "--port", "8600"]) == 0

    ((command, env),) = launched
    assert command[1:4] == ["-m", "streamlit", "run"]
    assert command[4].endswith("obsdeco/dashboard/app.py")
    assert command[command.index("--server.port") + 1] == "8600"
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    assert env["OBSDECO_DATABASE_URL"] == seeded


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _chromium() -> str:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    reason = "no Chromium found (apt-get install chromium): the browser test needs one"
    if IN_CI:
        pytest.fail(f"{reason}; in CI it must run")
    pytest.skip(reason)


@pytest.fixture
def served(seeded: str) -> Iterator[str]:
    """`streamlit run dashboard/app.py` on a free port of 127.0.0.1, on the seeded store."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            APP,
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
        ],
        env=dict(os.environ, OBSDECO_DATABASE_URL=seeded),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watchdog = threading.Timer(60, server.kill)
    watchdog.start()
    try:
        assert server.stdout is not None
        for line in server.stdout:  # ends if the watchdog kills a server that never starts
            if "You can now view" in line:
                break
        else:
            pytest.fail("streamlit did not start within 60 s")
        yield f"http://127.0.0.1:{port}"
    finally:
        watchdog.cancel()
        server.terminate()
        server.wait(timeout=10)


def test_a_browser_sees_the_total_cost_on_the_overview(served, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = _chromium()
    expected = f"${obsdeco.report('shop').cost.total_usd:,.4f}"

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{served}/?project=shop&range=7d")
            cost = page.get_by_test_id("stMetricValue").first
            cost.wait_for(timeout=30_000)
            page.screenshot(path=tmp_path / "overview.png", full_page=True)
            assert cost.inner_text() == expected
        finally:
            browser.close()
