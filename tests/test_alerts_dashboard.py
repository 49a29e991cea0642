"""The dashboard's Alerts page (streamlit AppTest): each rule's current state and the events
fired in the range, names shown as text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("streamlit", reason="the dashboard extra is not installed")

from streamlit.testing.v1 import AppTest

import obsdeco

APP = str(Path(__file__).parents[1] / "dashboard" / "app.py")
PLANTED = "**bold** <b>x</b> [link](https://example.com)"


def _quiet(_: Any) -> None:
    """A notifier that keeps the test's log clean."""


def _seed(url: str) -> datetime:
    """Project shop: 'spend' (every project) still firing, the planted one fired and resolved;
    project blog: 'blog-calls' firing."""
    obsdeco.configure(database_url=url)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    for project in ("shop", "blog"):
        collector = obsdeco.MetricsCollector(project)
        session = collector.start_session("ticket")
        collector.record_llm_call(
            session,
            provider="openai",
            model_name="gpt-4o",
            prompt_tokens=400_000,
            completion_tokens=100_000,
            latency_ms=800.0,
            success=project == "blog",
            error_type=None if project == "blog" else "server_error",
            timestamp=start - timedelta(minutes=1),
        )
        collector.end_session(session)
    obsdeco.configure(
        database_url=url,
        alert_interval_s=0,
        alerts=[
            obsdeco.Alert(name="spend", metric="cost_usd", window="1d", above=1.5, notify=_quiet),
            obsdeco.Alert(
                name=PLANTED,
                metric="error_rate",
                window="5m",
                above=0.5,
                project="shop",
                notify=_quiet,
            ),
            obsdeco.Alert(
                name="blog-calls",
                metric="calls",
                window="1h",
                above=0,
                project="blog",
                notify=_quiet,
            ),
        ],
    )
    obsdeco.check_alerts(start)
    obsdeco.check_alerts(start + timedelta(minutes=30))
    obsdeco.configure(database_url=url)
    return start


def _run(**params: str) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=30)
    for name, value in params.items():
        app.query_params[name] = value
    app.run()
    assert not app.exception, [error.message for error in app.exception]
    return app


def test_the_alerts_page_lists_rule_states_and_events(sqlite_url):
    start = _seed(sqlite_url)

    app = _run(project="shop", range="24h", page="Alerts")

    states, events = (frame.value for frame in app.dataframe)
    assert states.drop(columns="Since (UTC)").to_dict("records") == [
        {
            "Alert": PLANTED,
            "State": "resolved",
            "Metric": "error_rate",
            "Value": "-",
            "Threshold": "above 50.0%",
            "Window": "5m",
            "Project": "shop",
            "Budget": "",
        },
        {
            "Alert": "spend",
            "State": "firing",
            "Metric": "cost_usd",
            "Value": "$4.0000",
            "Threshold": "above $1.5000",
            "Window": "1d",
            "Project": "(all projects)",
            "Budget": "",
        },
    ]
    assert [moment.to_pydatetime() for moment in states["Since (UTC)"]] == [
        start + timedelta(minutes=30),
        start,
    ]
    assert events[["Alert", "State", "Value"]].to_dict("records") == [
        {"Alert": PLANTED, "State": "resolved", "Value": "-"},
        {"Alert": PLANTED, "State": "firing", "Value": "100.0%"},
        {"Alert": "spend", "State": "firing", "Value": "$4.0000"},
    ]
    shown = [element.value for kind in ("markdown", "caption", "text") for element in app.get(kind)]
    assert not any("<b>" in str(value) or "**bold**" in str(value) for value in shown)


def test_all_projects_show_every_alert_and_an_old_range_none(sqlite_url):
    _seed(sqlite_url)

    everything = _run(project="(all projects)", range="24h", page="Alerts")
    states, events = (frame.value for frame in everything.dataframe)

    assert sorted(states["Alert"]) == sorted(["blog-calls", PLANTED, "spend"])
    assert len(events) == 4

    obsdeco.configure(database_url=sqlite_url)
    later = _run(
        project="shop", range="custom", since="2020-01-01", until="2020-01-02", page="Alerts"
    )
    (states,) = (frame.value for frame in later.dataframe)
    assert len(states) == 2
    assert "No alert fired or resolved in this range." in [info.value for info in later.info]


def test_no_alert_yet_says_how_to_get_one(sqlite_url):
    obsdeco.configure(database_url=sqlite_url)
    collector = obsdeco.MetricsCollector("shop")
    session = collector.start_session("ticket")
    collector.end_session(session)
    obsdeco.flush()

    app = _run(project="shop", page="Alerts")

    assert [info.value for info in app.info] == ["No alert has fired yet (see obsdeco.Alert)."]
