"""What a user sees at process boundaries: the flush at interpreter exit, and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import obsdeco
from tests.conftest import count_rows

REPO = Path(__file__).resolve().parents[1]

RECORD_AND_EXIT = textwrap.dedent(
    """
    import sys
    import obsdeco

    obsdeco.configure(database_url=sys.argv[1], flush_at_exit_timeout_s=float(sys.argv[3]))
    collector = obsdeco.MetricsCollector("exit")
    session = collector.start_session("exit")
    for _ in range(int(sys.argv[2])):
        collector.record_llm_call(session, provider="openai", model_name="gpt-4o", latency_ms=1)
    collector.end_session(session)
    print("recorded")
    """
)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", RECORD_AND_EXIT, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_records_are_flushed_at_normal_interpreter_exit(database_url):
    result = _run(database_url, "5000", "60")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "recorded"
    assert count_rows(database_url, "llm_calls") == 5_000
    assert count_rows(database_url, "sessions") == 1


def test_records_that_cannot_be_stored_at_exit_are_reported_not_silently_lost(tmp_path):
    unreachable = f"sqlite:///{tmp_path}/no-such-folder/obsdeco.db"

    result = _run(unreachable, "7", "0.2")

    assert result.returncode == 0
    assert "could not store 9 records" in result.stderr  # session start, 7 calls, session end
    assert (
        "obsdeco at exit: 9 records of this process were dropped (0: queue full, 0: rejected by "
        "the database, 9: not stored in time at exit); written: 0"
    ) in result.stderr


def test_an_infinite_exit_timeout_is_refused_at_configure():
    for timeout in (float("inf"), 1e300, float("nan")):
        with pytest.raises(ValueError, match="flush_at_exit_timeout_s"):
            obsdeco.configure(flush_at_exit_timeout_s=timeout)


def test_cli_version_and_help():
    version = subprocess.run(
        [sys.executable, "-m", "obsdeco.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.strip() == f"obsdeco {obsdeco.__version__}"

    usage = subprocess.run(
        [sys.executable, "-m", "obsdeco.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "usage: obsdeco" in usage.stdout


def test_the_demo_reports_each_model_once(tmp_path):
    environment = {key: value for key, value in os.environ.items() if not key.endswith("_API_KEY")}
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=environment,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    section = result.stdout.split("Cost by model\n", 1)[1].split("\n\n", 1)[0]
    models = [line.split()[0] for line in section.splitlines()]
    assert models == ["claude-haiku-4-5-20251001", "gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18"]
    assert (tmp_path / "obsdeco.db").is_file()
