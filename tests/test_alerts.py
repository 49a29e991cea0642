"""Alerts on SQLite and PostgreSQL: rules over the stored calls fire once per crossing and once on
resolving, to a local webhook receiver (retried, failures counted), a callable or the log; the
events are stored, listed by `get_alerts()` and `obsdeco alerts`. Time is moved by passing `now`
to `obsdeco.check_alerts()`, never by sleeping."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy

import obsdeco
from obsdeco.alerts import notify
from obsdeco.alerts.budget_usage import (
    BudgetUsage,
    fire_budget_warning,
    register_budget_metric,
    unregister_budget_metric,
)
from obsdeco.alerts.events import AlertEvent
from obsdeco.storage import SQLAlchemyStorage
from obsdeco.storage.migrations.state import VERSION_TABLE
from obsdeco.windows import parse_window
from tests.conftest import count_rows

NOW = datetime(2026, 11, 27, 12, 30, tzinfo=UTC)


class Receiver:
    """A webhook on 127.0.0.1: answers the statuses in `failures` first, then 200; keeps every
    accepted JSON body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.attempts = 0
        self.failures: list[int] = []
        self.always: int | None = None
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.attempts += 1
                receiver.paths.append(self.path)
                status = receiver.always or (receiver.failures.pop(0) if receiver.failures else 200)
                if status == 200:
                    assert self.headers["Content-Type"] == "application/json"
                    receiver.bodies.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/secret-token"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """A local receiver; retries do not wait (their delays are tested on their own)."""
    monkeypatch.setattr(notify, "WEBHOOK_BACKOFF_S", 0.0)
    receiver = Receiver()
    yield receiver
    receiver.close()


class Counts:
    """The alert counters of `obsdeco.stats()` since the test began (they are per process)."""

    NAMES = (
        "alerts_fired",
        "alerts_resolved",
        "alert_notifications_sent",
        "alert_notifications_failed",
        "alert_notification_retries",
        "alert_evaluation_errors",
    )

    def __init__(self) -> None:
        self._start = obsdeco.stats()

    def __getattr__(self, name: str) -> int:
        if name not in self.NAMES:
            raise AttributeError(name)
        return getattr(obsdeco.stats(), name) - getattr(self._start, name)


@pytest.fixture
def counts() -> Counts:
    return Counts()


def _setup(url: str, *alerts: obsdeco.Alert) -> None:
    obsdeco.configure(project="shop", database_url=url, alert_interval_s=0, alerts=list(alerts))


def _record(
    project: str = "shop",
    at: datetime = NOW - timedelta(minutes=10),
    calls: int = 1,
    **fields: Any,
) -> None:
    collector = obsdeco.MetricsCollector(project)
    session = collector.start_session("ticket")
    values = {
        "provider": "openai",
        "model_name": "gpt-4o",
        "prompt_tokens": 400_000,
        "completion_tokens": 100_000,
        "latency_ms": 800.0,
        "timestamp": at,
    }
    for _ in range(calls):
        collector.record_llm_call(session, **(values | fields))
    collector.end_session(session)


def _payload(event: AlertEvent) -> dict[str, Any]:
    return event.payload()


# --- cost, to a webhook -------------------------------------------------------------------------


def test_a_cost_alert_fires_once_and_resolves_when_the_window_moves_past(
    counts, database_url, webhook
):
    _setup(
        database_url,
        obsdeco.Alert(name="spend", metric="cost_usd", window="1h", above=1.5, notify=webhook.url),
    )
    _record()  # gpt-4o: 400,000 x $2.50/M + 100,000 x $10/M = $2.00

    fired = obsdeco.check_alerts(NOW)

    assert webhook.bodies == [
        {
            "alert": "spend",
            "metric": "cost_usd",
            "value": 2.0,
            "threshold": 1.5,
            "direction": "above",
            "state": "firing",
            "text": "obsdeco alert 'spend' is firing: cost $2.0000 in the last 1h (above $1.5000)",
            "window": "1h",
            "project": None,
            "at": "2026-11-27T12:30:00+00:00",
        }
    ]
    assert [_payload(event) for event in fired] == webhook.bodies
    assert webhook.paths == ["/hooks/secret-token"]

    assert obsdeco.check_alerts(NOW + timedelta(minutes=1)) == []
    assert obsdeco.check_alerts(NOW + timedelta(minutes=49)) == []
    assert len(webhook.bodies) == 1

    resolved = obsdeco.check_alerts(NOW + timedelta(minutes=50, seconds=1))

    assert [event.state for event in resolved] == ["resolved"]
    assert webhook.bodies[1] | {"at": None} == {
        "alert": "spend",
        "metric": "cost_usd",
        "value": 0.0,
        "threshold": 1.5,
        "direction": "above",
        "state": "resolved",
        "text": "obsdeco alert 'spend' resolved: cost $0.0000 in the last 1h (above $1.5000)",
        "window": "1h",
        "project": None,
        "at": None,
    }
    assert webhook.bodies[1]["at"] == "2026-11-27T13:20:01+00:00"
    assert obsdeco.check_alerts(NOW + timedelta(hours=3)) == []
    assert len(webhook.bodies) == 2
    assert [(e.state, e.value) for e in obsdeco.get_alerts()] == [
        ("resolved", 0.0),
        ("firing", 2.0),
    ]
    stats = counts
    assert (stats.alerts_fired, stats.alerts_resolved) == (1, 1)
    assert (stats.alert_notifications_sent, stats.alert_notifications_failed) == (2, 0)


def test_the_alert_fires_again_on_a_new_crossing(sqlite_url, webhook):
    _setup(
        sqlite_url,
        obsdeco.Alert(name="spend", metric="cost_usd", window="1h", above=1.5, notify=webhook.url),
    )
    _record()
    obsdeco.check_alerts(NOW)
    obsdeco.check_alerts(NOW + timedelta(hours=2))
    _record(at=NOW + timedelta(hours=2, minutes=30), calls=2)

    obsdeco.check_alerts(NOW + timedelta(hours=3))

    assert [(body["state"], body["value"]) for body in webhook.bodies] == [
        ("firing", 2.0),
        ("resolved", 0.0),
        ("firing", 4.0),
    ]


def test_the_state_survives_reconfiguring_and_a_new_process(sqlite_url, webhook, tmp_path):
    rule = obsdeco.Alert(
        name="spend", metric="cost_usd", window="1h", above=1.5, notify=webhook.url
    )
    _setup(sqlite_url, rule)
    _record()
    obsdeco.check_alerts(NOW)
    _setup(sqlite_url, rule)
    assert obsdeco.check_alerts(NOW) == []

    # Another store in between forgets the states held in memory: they come back from the store.
    _setup(f"sqlite:///{tmp_path}/other.db", rule)
    obsdeco.check_alerts(NOW)
    _setup(sqlite_url, rule)
    assert obsdeco.check_alerts(NOW + timedelta(minutes=5)) == []

    assert [body["state"] for body in webhook.bodies] == ["firing"]


def test_a_changed_threshold_is_judged_afresh(sqlite_url, webhook):
    _setup(
        sqlite_url,
        obsdeco.Alert(name="spend", metric="cost_usd", window="1h", above=1.5, notify=webhook.url),
    )
    _record()
    obsdeco.check_alerts(NOW)
    _setup(
        sqlite_url,
        obsdeco.Alert(name="spend", metric="cost_usd", window="1h", above=5.0, notify=webhook.url),
    )

    obsdeco.check_alerts(NOW)

    assert [(b["state"], b["threshold"]) for b in webhook.bodies] == [
        ("firing", 1.5),
        ("resolved", 5.0),
    ]


def test_a_project_alert_counts_only_that_projects_calls(database_url, webhook):
    _setup(
        database_url,
        obsdeco.Alert(
            name="shop-spend",
            metric="cost_usd",
            window="1h",
            above=3.0,
            project="shop",
            notify=webhook.url,
        ),
    )
    _record(project="shop")
    _record(project="blog", calls=3)

    assert obsdeco.check_alerts(NOW) == []
    _record(project="shop")
    (fired,) = obsdeco.check_alerts(NOW)

    assert (fired.value, fired.project) == (4.0, "shop")
    assert webhook.bodies[0]["project"] == "shop"
    assert webhook.bodies[0]["text"].endswith("(above $3.0000), project shop")


# --- the other metrics --------------------------------------------------------------------------


def test_error_rate_fires_as_a_fraction_and_resolves_when_it_drops(database_url, webhook):
    _setup(
        database_url,
        obsdeco.Alert(
            name="errors", metric="error_rate", window="5m", above=0.2, notify=webhook.url
        ),
    )
    _record(at=NOW - timedelta(minutes=2), calls=3)
    _record(at=NOW - timedelta(minutes=2), success=False, error_type="rate_limit")

    obsdeco.check_alerts(NOW)
    _record(at=NOW - timedelta(minutes=1), calls=2)
    obsdeco.check_alerts(NOW)

    assert [(b["state"], b["value"], b["threshold"]) for b in webhook.bodies] == [
        ("firing", 0.25, 0.2),
        ("resolved", 1 / 6, 0.2),
    ]
    assert webhook.bodies[0]["text"] == (
        "obsdeco alert 'errors' is firing: error rate 25.0% in the last 5m (above 20.0%)"
    )


def test_calls_older_than_the_window_do_not_count(database_url, webhook):
    _setup(
        database_url,
        obsdeco.Alert(
            name="errors", metric="error_rate", window="5m", above=0.2, notify=webhook.url
        ),
    )
    _record(at=NOW - timedelta(minutes=6), success=False, error_type="server_error")
    _record(at=NOW - timedelta(minutes=1))

    assert obsdeco.check_alerts(NOW) == []


def test_latency_p95_is_exact(database_url, webhook):
    _setup(
        database_url,
        obsdeco.Alert(
            name="slow", metric="latency_p95_ms", window="1h", above=900, notify=webhook.url
        ),
    )
    for latency in range(100, 2_101, 100):
        _record(latency_ms=float(latency))

    (fired,) = obsdeco.check_alerts(NOW)

    assert fired.value == 2_000.0  # the 95th percentile of 100, 200, ..., 2100
    assert webhook.bodies[0]["text"] == (
        "obsdeco alert 'slow' is firing: p95 latency 2,000 ms in the last 1h (above 900 ms)"
    )
    (resolved,) = obsdeco.check_alerts(NOW + timedelta(hours=1))
    assert (resolved.state, resolved.value) == ("resolved", None)
    assert webhook.bodies[1]["text"] == (
        "obsdeco alert 'slow' resolved: p95 latency n/a (no calls) in the last 1h (above 900 ms)"
    )


def test_calls_above_and_below(database_url, webhook):
    _setup(
        database_url,
        obsdeco.Alert(name="busy", metric="calls", window="1h", above=2, notify=webhook.url),
        obsdeco.Alert(name="quiet", metric="calls", window="5m", below=1, notify=webhook.url),
    )
    _record(calls=3)

    fired = obsdeco.check_alerts(NOW)

    assert [(e.alert, e.state, e.value, e.direction) for e in fired] == [
        ("busy", "firing", 3.0, "above"),
        ("quiet", "firing", 0.0, "below"),
    ]
    assert webhook.bodies[1]["text"] == (
        "obsdeco alert 'quiet' is firing: calls 0 in the last 5m (below 1)"
    )
    _record(at=NOW + timedelta(minutes=1))
    assert [(e.alert, e.state) for e in obsdeco.check_alerts(NOW + timedelta(minutes=2))] == [
        ("quiet", "resolved")
    ]


# --- budgets ------------------------------------------------------------------------------------


def test_a_budget_alert_reads_the_registered_source(sqlite_url, webhook):
    usage = {"daily": BudgetUsage(spent_usd=16.0, limit_usd=20.0, soft_usd=15.0)}

    def source() -> dict[str, BudgetUsage]:
        return usage

    register_budget_metric(source)
    try:
        _setup(
            sqlite_url,
            obsdeco.Alert(name="budget", metric="budget", budget="daily", notify=webhook.url),
            obsdeco.Alert(name="nearly", metric="budget", above=0.9, notify=webhook.url),
        )
        fired = obsdeco.check_alerts(NOW)
        usage["daily"] = BudgetUsage(19.0, 20.0, 15.0)
        fired += obsdeco.check_alerts(NOW)
        usage["daily"] = BudgetUsage(2.0, 20.0, 15.0)
        fired += obsdeco.check_alerts(NOW)
    finally:
        unregister_budget_metric(source)

    assert [(e.alert, e.state, e.value, e.threshold, e.budget) for e in fired] == [
        ("budget", "firing", 0.8, 0.75, "daily"),
        ("nearly", "firing", 0.95, 0.9, "daily"),
        ("budget", "resolved", 0.1, 0.75, "daily"),
        ("nearly", "resolved", 0.1, 0.9, "daily"),
    ]
    assert webhook.bodies[0]["budget"] == "daily"
    assert webhook.bodies[0]["text"] == (
        "obsdeco alert 'budget' is firing: budget 'daily' used 80.0% (above 75.0%)"
    )


def test_fire_budget_warning_fires_a_budget_alert_once(sqlite_url):
    received: list[dict[str, Any]] = []
    _setup(
        sqlite_url,
        obsdeco.Alert(name="soft", metric="budget", notify=received.append),
        obsdeco.Alert(name="other", metric="budget", budget="weekly", notify=received.append),
        obsdeco.Alert(name="spend", metric="cost_usd", above=100, notify=received.append),
    )

    fire_budget_warning("daily", spent_usd=18.0, limit_usd=20.0, soft_usd=15.0)
    obsdeco.check_alerts(NOW)
    fire_budget_warning("daily", spent_usd=19.0, limit_usd=20.0, soft_usd=15.0)
    obsdeco.check_alerts(NOW)

    assert [
        (r["alert"], r["state"], r["value"], r["threshold"], r["budget"]) for r in received
    ] == [("soft", "firing", 0.9, 0.75, "daily")]
    (stored,) = obsdeco.get_alerts(name="soft")
    assert (stored.metric, stored.budget, stored.value) == ("budget", "daily", 0.9)


def test_fire_budget_warning_without_budget_alerts_does_nothing(sqlite_url):
    _setup(sqlite_url)
    fire_budget_warning("daily", 18.0, 20.0, 15.0)
    assert obsdeco.check_alerts(NOW) == []
    assert obsdeco.get_alerts() == []


# --- delivery -----------------------------------------------------------------------------------


def test_a_webhook_failing_twice_is_retried_until_it_succeeds(counts, sqlite_url, webhook):
    webhook.failures = [503, 500]
    _setup(
        sqlite_url,
        obsdeco.Alert(name="spend", metric="cost_usd", above=1.5, notify=webhook.url),
    )
    _record()

    obsdeco.check_alerts(NOW)

    assert webhook.attempts == 3
    assert [body["state"] for body in webhook.bodies] == ["firing"]
    stats = counts
    assert (stats.alert_notification_retries, stats.alert_notifications_failed) == (2, 0)
    assert stats.alert_notifications_sent == 1


def test_a_webhook_that_always_fails_is_counted_and_logged_once_per_streak(
    counts, sqlite_url, webhook, caplog
):
    webhook.always = 500
    _setup(
        sqlite_url,
        obsdeco.Alert(name="spend", metric="cost_usd", above=1.5, notify=webhook.url),
    )
    _record()

    with caplog.at_level(logging.WARNING, logger="obsdeco.alerts"):
        assert len(obsdeco.check_alerts(NOW)) == 1
        obsdeco.check_alerts(NOW + timedelta(hours=2))
        webhook.always = None
        _record(at=NOW + timedelta(hours=2, minutes=30))
        obsdeco.check_alerts(NOW + timedelta(hours=3))

    assert webhook.attempts == 2 * notify.WEBHOOK_ATTEMPTS + 1
    assert [body["state"] for body in webhook.bodies] == ["firing"]
    stats = counts
    assert (stats.alert_notifications_failed, stats.alert_notifications_sent) == (2, 1)
    assert stats.alert_notification_retries == 2 * (notify.WEBHOOK_ATTEMPTS - 1)
    messages = [record.getMessage() for record in caplog.records]
    port = webhook.server.server_address[1]
    assert messages == [
        f"obsdeco cannot deliver alert notifications to http://127.0.0.1:{port} (HTTP 500; "
        "4 attempts); they are counted in obsdeco.stats().alert_notifications_failed and "
        "logged again once delivery resumes",
        f"obsdeco alert notifications to http://127.0.0.1:{port} delivered again",
    ]
    assert all("secret-token" not in message for message in messages)
    # Every event is stored, delivered or not.
    assert [event.state for event in obsdeco.get_alerts()] == ["firing", "resolved", "firing"]


def test_a_client_error_is_not_retried(counts, sqlite_url, webhook):
    webhook.always = 404
    _setup(
        sqlite_url,
        obsdeco.Alert(name="spend", metric="cost_usd", above=1.5, notify=webhook.url),
    )
    _record()

    obsdeco.check_alerts(NOW)

    assert webhook.attempts == 1
    assert counts.alert_notifications_failed == 1


def test_an_unreachable_webhook_is_counted_without_an_exception(counts, sqlite_url, webhook):
    url = webhook.url
    webhook.close()
    _setup(sqlite_url, obsdeco.Alert(name="spend", metric="cost_usd", above=1.5, notify=url))
    _record()

    (fired,) = obsdeco.check_alerts(NOW)

    assert fired.state == "firing"
    stats = counts
    assert stats.alert_notifications_failed == 1
    assert stats.alert_notification_retries == notify.WEBHOOK_ATTEMPTS - 1


def test_retries_back_off_exponentially(monkeypatch):
    receiver = Receiver()
    receiver.always = 502
    alert = obsdeco.Alert(name="spend", metric="cost_usd", above=1.0, notify=receiver.url)
    event = AlertEvent(
        alert="spend",
        metric="cost_usd",
        state="firing",
        value=2.0,
        threshold=1.0,
        window="1h",
        fired_at=NOW,
    )
    waits: list[float] = []
    try:
        assert notify.deliver(alert, event, sleep=waits.append) is False
    finally:
        receiver.close()

    assert waits == [0.25, 0.5, 1.0]
    assert receiver.attempts == 4


def test_a_callable_gets_the_same_mapping_as_the_webhook(sqlite_url, webhook):
    received: list[dict[str, Any]] = []
    _setup(
        sqlite_url,
        obsdeco.Alert(name="hook", metric="cost_usd", above=1.5, notify=webhook.url),
        obsdeco.Alert(name="call", metric="cost_usd", above=1.5, notify=received.append),
    )
    _record()

    obsdeco.check_alerts(NOW)

    assert [body | {"alert": "call"} for body in webhook.bodies] == [
        body | {"text": body["text"].replace("'call'", "'hook'")} for body in received
    ]


def test_a_callable_that_raises_is_logged_once_and_counted(counts, sqlite_url, caplog):
    calls: list[str] = []

    def broken(payload: Any) -> None:
        calls.append(payload["state"])
        raise RuntimeError("pager down")

    _setup(sqlite_url, obsdeco.Alert(name="spend", metric="cost_usd", above=1.5, notify=broken))
    _record()

    with caplog.at_level(logging.WARNING, logger="obsdeco.alerts"):
        obsdeco.check_alerts(NOW)
        obsdeco.check_alerts(NOW + timedelta(hours=2))

    assert calls == ["firing", "resolved"]
    assert counts.alert_notifications_failed == 2
    (logged,) = caplog.records
    assert "its notifier callable" in logged.getMessage()
    assert logged.exc_info is not None
    assert str(logged.exc_info[1]) == "pager down"


def test_log_notifies_with_a_warning(sqlite_url, caplog):
    _setup(sqlite_url, obsdeco.Alert(name="spend", metric="cost_usd", above=1.5))
    _record()

    with caplog.at_level(logging.WARNING, logger="obsdeco.alerts"):
        obsdeco.check_alerts(NOW)

    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "obsdeco.alerts",
            "WARNING",
            "obsdeco alert 'spend' is firing: cost $2.0000 in the last 1h (above $1.5000)",
        )
    ]


def test_names_are_escaped_for_slack_in_text_only(sqlite_url):
    received: list[dict[str, Any]] = []
    name = "<!channel> & *spend*"
    _setup(sqlite_url, obsdeco.Alert(name=name, metric="calls", above=0, notify=received.append))
    _record()

    obsdeco.check_alerts(NOW)

    (payload,) = received
    assert payload["alert"] == name
    assert payload["text"].startswith("obsdeco alert '&lt;!channel&gt; &amp; *spend*' is firing")


def test_obsdecos_own_post_is_not_captured_as_an_llm_call(sqlite_url, webhook, patched):
    _setup(
        sqlite_url, obsdeco.Alert(name="spend", metric="cost_usd", above=1.5, notify=webhook.url)
    )
    _record()
    obsdeco.check_alerts(NOW)
    obsdeco.flush()

    assert len(webhook.bodies) == 1
    assert count_rows(sqlite_url, "llm_calls") == 1


def test_the_background_evaluator_fires_without_being_asked(sqlite_url):
    fired = threading.Event()
    received: list[dict[str, Any]] = []

    def note(payload: Any) -> None:
        received.append(dict(payload))
        fired.set()

    obsdeco.configure(database_url=sqlite_url)
    _record(at=datetime.now(UTC) - timedelta(minutes=1))
    obsdeco.flush()
    obsdeco.configure(
        database_url=sqlite_url,
        alert_interval_s=0.05,
        alerts=[obsdeco.Alert(name="spend", metric="cost_usd", above=1.5, notify=note)],
    )

    assert fired.wait(timeout=30)
    assert (received[0]["alert"], received[0]["state"], received[0]["value"]) == (
        "spend",
        "firing",
        2.0,
    )
    obsdeco.configure(database_url=sqlite_url)


def test_a_database_down_is_counted_and_logged_once(counts, tmp_path, caplog):
    missing = tmp_path / "gone"
    url = f"sqlite:///{missing}/obsdeco.db"  # its directory does not exist
    obsdeco.configure(
        database_url=url,
        alert_interval_s=0,
        alerts=[obsdeco.Alert(name="spend", metric="cost_usd", above=1.5)],
    )

    with caplog.at_level(logging.WARNING, logger="obsdeco.alerts"):
        assert obsdeco.check_alerts(NOW) == []
        assert obsdeco.check_alerts(NOW) == []

    assert counts.alert_evaluation_errors == 2
    (logged,) = [r for r in caplog.records if r.name == "obsdeco.alerts"]
    assert logged.getMessage().startswith("obsdeco could not read the alerts' last states")


# --- stored events, CLI, older stores -----------------------------------------------------------


def test_get_alerts_filters(database_url):
    received: list[Any] = []
    _setup(
        database_url,
        obsdeco.Alert(name="spend", metric="cost_usd", above=1.5, notify=received.append),
        obsdeco.Alert(name="busy", metric="calls", above=0, project="shop", notify=received.append),
    )
    _record()
    obsdeco.check_alerts(NOW)
    obsdeco.check_alerts(NOW + timedelta(hours=2))

    assert [(e.alert, e.state) for e in obsdeco.get_alerts()] == [
        ("busy", "resolved"),
        ("spend", "resolved"),
        ("busy", "firing"),
        ("spend", "firing"),
    ]
    assert [e.state for e in obsdeco.get_alerts(name="spend")] == ["resolved", "firing"]
    assert [e.alert for e in obsdeco.get_alerts(project="shop")] == ["busy", "busy"]
    assert len(obsdeco.get_alerts(since=NOW + timedelta(hours=1))) == 2
    assert len(obsdeco.get_alerts(limit=1)) == 1
    with pytest.raises(ValueError, match="limit must be a whole number"):
        obsdeco.get_alerts(limit=0)
    with pytest.raises(ValueError, match="since must be timezone-aware"):
        obsdeco.get_alerts(since=datetime(2026, 1, 1))


def test_the_cli_lists_the_stored_alerts(sqlite_url):
    _setup(
        sqlite_url,
        obsdeco.Alert(name="spend", metric="cost_usd", above=1.5, notify=lambda _: None),
        obsdeco.Alert(
            name="**bold** <b>x</b>", metric="error_rate", window="5m", above=0.5, project="shop"
        ),
    )
    _record(at=NOW - timedelta(minutes=1), success=False, error_type="server_error")
    obsdeco.check_alerts(NOW)
    obsdeco.check_alerts(NOW + timedelta(hours=2))

    listed = _obsdeco("--database-url", sqlite_url, "alerts")
    only = _obsdeco("alerts", "--database-url", sqlite_url, "--name", "spend", "--limit", "1")

    assert listed.returncode == 0, listed.stderr
    assert [_cells(line) for line in listed.stdout.splitlines()] == [
        ["fired (UTC)", "alert", "state", "metric", "value", "threshold", "window", "project"],
        [
            "2026-11-27 14:30:00",
            "**bold** <b>x</b>",
            "resolved",
            "error_rate",
            "-",
            "above 50.0%",
            "5m",
            "shop",
        ],
        [
            "2026-11-27 14:30:00",
            "spend",
            "resolved",
            "cost_usd",
            "$0.0000",
            "above $1.5000",
            "1h",
            "(all)",
        ],
        [
            "2026-11-27 12:30:00",
            "**bold** <b>x</b>",
            "firing",
            "error_rate",
            "100.0%",
            "above 50.0%",
            "5m",
            "shop",
        ],
        [
            "2026-11-27 12:30:00",
            "spend",
            "firing",
            "cost_usd",
            "$2.0000",
            "above $1.5000",
            "1h",
            "(all)",
        ],
    ]
    assert only.returncode == 0, only.stderr
    assert [_cells(line)[1:3] for line in only.stdout.splitlines()[1:]] == [["spend", "resolved"]]


def test_the_cli_says_when_no_alert_is_stored(sqlite_url):
    obsdeco.configure(database_url=sqlite_url)
    _record()
    obsdeco.flush()

    result = _obsdeco("alerts", "--database-url", sqlite_url)

    assert (result.returncode, result.stdout) == (0, "no alerts stored yet\n")


def _cells(line: str) -> list[str]:
    """A table line's cells: columns are separated by at least two spaces."""
    return [cell.strip() for cell in line.split("  ") if cell.strip()]


def _obsdeco(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "obsdeco.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_store_without_the_alerts_table_gets_it(database_url):
    storage = SQLAlchemyStorage(database_url)
    storage.query_alert_events()
    with storage.engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"DROP TABLE {VERSION_TABLE}"))
        connection.execute(sqlalchemy.text("DROP TABLE alert_events"))
    storage.close()

    _setup(database_url, obsdeco.Alert(name="busy", metric="calls", above=0))
    _record()
    obsdeco.check_alerts(NOW)

    assert [e.alert for e in obsdeco.get_alerts()] == ["busy"]
    assert count_rows(database_url, "alert_events") == 1


# --- validation ---------------------------------------------------------------------------------


def test_windows_parse_to_durations():
    assert parse_window("30s") == timedelta(seconds=30)
    assert parse_window("5m") == timedelta(minutes=5)
    assert parse_window("1h") == timedelta(hours=1)
    assert parse_window("1d") == timedelta(days=1)
    assert parse_window("2w") == timedelta(weeks=2)
    assert parse_window(" 1h ") == timedelta(hours=1)


@pytest.mark.parametrize(
    ("window", "problem"),
    [
        ("5 minutes", "must be a whole number and a unit"),
        ("1y", "must be a whole number and a unit"),
        ("-1h", "must be a whole number and a unit"),
        ("1.5h", "must be a whole number and a unit"),
        ("", "must be a whole number and a unit"),
        (5, "must be a whole number and a unit"),
        ("0m", "must be longer than 0 and at most 10 years"),
        ("9999w", "must be longer than 0 and at most 10 years"),
    ],
)
def test_bad_windows_are_refused(window, problem):
    with pytest.raises(ValueError, match=problem):
        parse_window(window)
    with pytest.raises(ValueError, match=problem):
        obsdeco.Alert(name="a", metric="calls", window=window, above=1)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"metric": "cost"}, "Input should be 'cost_usd', 'error_rate'"),
        ({"notify": "ftp://hooks.example/x"}, "notify must be an http\\(s\\) URL"),
        ({"notify": "slack"}, "notify must be an http\\(s\\) URL"),
        ({"notify": "https://"}, "notify must be an http\\(s\\) URL"),
        ({"notify": 42}, "got 'int'"),
        ({"above": None}, "needs exactly one of 'above' and 'below' \\(got neither\\)"),
        ({"below": 1.0}, "needs exactly one of 'above' and 'below' \\(got above and below\\)"),
        ({"above": -1.0}, "finite number >= 0"),
        ({"above": float("nan")}, "finite number >= 0"),
        ({"metric": "error_rate", "above": 5}, "is a fraction"),
        ({"metric": "budget", "above": None, "below": 0.5}, "takes only 'above'"),
        ({"budget": "daily"}, "applies only to metric 'budget'"),
        ({"color": "red"}, "Extra inputs are not permitted"),
        ({"name": ""}, "at least 1 character"),
    ],
)
def test_bad_alerts_are_refused(fields, problem):
    values = {"name": "spend", "metric": "cost_usd", "above": 1.0} | fields
    with pytest.raises(ValueError, match=problem):
        obsdeco.Alert(**values)


def test_a_refused_url_is_not_echoed_whole():
    with pytest.raises(ValueError, match="notify must be") as refused:
        obsdeco.Alert(name="a", metric="calls", above=1, notify="hooks.example/secret-token")
    assert "secret-token" not in str(refused.value)


def test_configure_refuses_duplicate_names_and_a_single_alert():
    rule = obsdeco.Alert(name="spend", metric="cost_usd", above=1.0)
    with pytest.raises(ValueError, match="alert names must be unique; given twice: \\['spend'\\]"):
        obsdeco.configure(alerts=[rule, rule])
    with pytest.raises(ValueError, match=r"alerts must be a list of obsdeco\.Alert"):
        obsdeco.configure(alerts=rule)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alert_interval_s"):
        obsdeco.configure(alert_interval_s=-1)
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        obsdeco.check_alerts(datetime(2026, 1, 1))
