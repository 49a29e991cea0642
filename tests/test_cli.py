"""The obsdeco command line, run as a user runs it, on a seeded SQLite store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import obsdeco
from obsdeco.storage import SQLAlchemyStorage, WriteBatch


def _obsdeco(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "obsdeco.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def store(sqlite_url: str) -> dict[str, str]:
    """Two projects; the newest session is 'refund' of project shop."""
    obsdeco.configure(database_url=sqlite_url)
    ids = {}
    for project, name, tokens in (("blog", "draft", 1_000), ("shop", "refund", 2_000)):
        collector = obsdeco.MetricsCollector(project)
        session = collector.start_session(name)
        collector.record_llm_call(
            session,
            provider="openai",
            model_name="gpt-4o",
            prompt_tokens=tokens,
            completion_tokens=100,
            latency_ms=800,
            agent_name="Writer",
        )
        collector.end_session(session)
        ids[name] = session.id
    obsdeco.flush()
    return {"url": sqlite_url, **ids}


def test_sessions_lists_newest_first_with_totals(store):
    result = _obsdeco("--database-url", store["url"], "sessions")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "started",
        "(UTC)",
        "id",
        "name",
        "status",
        "calls",
        "tokens",
        "cost",
    ]
    assert store["refund"] in lines[1]
    assert "2,100" in lines[1]
    # gpt-4o: 2,000 x $2.50/M + 100 x $10/M = $0.0060
    assert "$0.0060" in lines[1]
    assert store["draft"] in lines[2]


def test_sessions_filters_by_project_and_limit(store):
    result = _obsdeco(
        "--database-url", store["url"], "sessions", "--project", "blog", "--limit", "5"
    )

    assert store["draft"] in result.stdout
    assert store["refund"] not in result.stdout


def test_report_last_in_each_format(store):
    text = _obsdeco("--database-url", store["url"], "report", "--last")
    as_json = _obsdeco("--database-url", store["url"], "report", "--last", "--format", "json")
    markdown = _obsdeco("--database-url", store["url"], "report", "--last", "--format", "markdown")

    assert "obsdeco session report: refund" in text.stdout
    assert "$0.0060" in text.stdout
    report = json.loads(as_json.stdout)
    assert report["session"]["id"] == store["refund"]
    assert report["totals"]["prompt_tokens"] == 2_000
    assert report["cost"]["total_usd"] == pytest.approx(0.006)
    assert markdown.stdout.startswith("# obsdeco session report: refund")
    assert "| cost | $0.0060 |" in markdown.stdout


def test_report_by_id_and_last_of_a_project(store):
    by_id = _obsdeco("--database-url", store["url"], "report", store["draft"], "--format", "json")
    last_blog = _obsdeco(
        "--database-url", store["url"], "report", "--last", "--project", "blog", "--format", "json"
    )

    assert json.loads(by_id.stdout)["session"]["name"] == "draft"
    assert json.loads(last_blog.stdout)["session"]["id"] == store["draft"]


def test_unknown_session_and_bad_time_are_clear_errors(store):
    unknown = _obsdeco("--database-url", store["url"], "report", "nope")
    bad_time = _obsdeco("--database-url", store["url"], "sessions", "--since", "yesterday-ish")

    assert unknown.returncode == 1
    assert "no session with id 'nope'" in unknown.stderr
    assert bad_time.returncode == 2
    assert "invalid time 'yesterday-ish'" in bad_time.stderr


def test_empty_store_says_so(sqlite_url):
    storage = SQLAlchemyStorage(sqlite_url)
    storage.write(WriteBatch())  # an empty transaction: the tables exist, with no rows
    storage.close()

    result = _obsdeco("--database-url", sqlite_url, "sessions")

    assert result.returncode == 0
    assert result.stdout.strip() == "no sessions stored yet"


def test_options_go_before_or_after_the_command(store):
    before = _obsdeco("--database-url", store["url"], "report", "--last", "--format", "json")
    after = _obsdeco("report", "--last", "--database-url", store["url"], "--format", "json")
    sessions = _obsdeco("sessions", "--database-url", store["url"])

    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout) == json.loads(before.stdout)
    assert store["refund"] in sessions.stdout


def test_a_bare_path_names_a_sqlite_file(store, tmp_path):
    path = store["url"].removeprefix("sqlite:///")
    relative = subprocess.run(
        [sys.executable, "-m", "obsdeco.cli", "sessions", "--database-url", "obsdeco.db"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(path).parent,
    )

    assert store["refund"] in _obsdeco("sessions", "--database-url", path).stdout
    assert store["refund"] in relative.stdout


def test_reading_a_missing_store_is_an_error_that_creates_nothing(tmp_path):
    missing = tmp_path / "typo.db"

    for command in (["sessions"], ["report", "--last"], ["report", "--project", "p"]):
        result = _obsdeco(*command, "--database-url", str(missing))
        assert result.returncode == 1
        assert f"no obsdeco database at {missing}" in result.stderr
    assert not missing.exists()


def test_a_closed_pipe_ends_the_output_quietly(sqlite_url):
    obsdeco.configure(database_url=sqlite_url)
    collector = obsdeco.MetricsCollector("many")
    for number in range(3_000):  # a listing of ~300 KB, more than a pipe holds
        collector.end_session(collector.start_session(f"session-{number}"))
    obsdeco.flush()
    command = [sys.executable, "-m", "obsdeco.cli", "--database-url", sqlite_url, "sessions"]
    with subprocess.Popen(
        [*command, "--limit", "3000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        assert process.stdout is not None
        process.stdout.read(10)
        process.stdout.close()  # what `| head -c 10` does
        _, stderr = process.communicate(timeout=60)

    assert b"Traceback" not in stderr
    assert b"BrokenPipeError" not in stderr


def test_project_report_in_each_format(store):
    text = _obsdeco("--database-url", store["url"], "report", "--project", "shop", "--since", "1d")
    as_json = _obsdeco(
        "--database-url", store["url"], "report", "--project", "shop", "--format", "json"
    )
    everything = _obsdeco(
        "--database-url", store["url"], "report", "--since", "7d", "--format", "json"
    )

    assert "obsdeco project report: shop" in text.stdout
    report = json.loads(as_json.stdout)
    assert report["sessions"] == 1
    assert report["totals"]["prompt_tokens"] == 2_000
    assert report["cost"]["total_usd"] == pytest.approx(0.006)
    # blog: 1,000 x $2.50/M + 100 x $10/M = $0.0035; with shop's $0.0060
    assert json.loads(everything.stdout)["cost"]["total_usd"] == pytest.approx(0.0095)


def test_report_without_a_target_is_a_usage_error(store):
    result = _obsdeco("--database-url", store["url"], "report")

    assert result.returncode == 2
    assert "give SESSION_ID, --last, or --project" in result.stderr
