"""Records survive the ways real processes end: SIGTERM, SIGINT, and multiprocessing workers
(which end through os._exit, skipping atexit), under fork, forkserver and spawn."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import count_rows

REPO = Path(__file__).resolve().parents[1]

RECORD_THEN_WAIT = textwrap.dedent(
    """
    import signal, sys
    import obsdeco

    if sys.argv[3] == "user-handler":
        def user_handler(signum, frame):
            print("user handler ran", flush=True)
            sys.exit(3)
        signal.signal(signal.SIGTERM, user_handler)

    obsdeco.configure(database_url=sys.argv[1])
    collector = obsdeco.MetricsCollector("signals")
    session = collector.start_session("service")
    for _ in range(int(sys.argv[2])):
        collector.record_llm_call(session, provider="openai", model_name="gpt-4o", latency_ms=1)
    print("recorded", obsdeco.stats().pending > 0, flush=True)
    sys.stdin.read()  # a service waiting for work, until it is stopped
    """
)


def _start(database_url: str, calls: int, mode: str = "default") -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", RECORD_THEN_WAIT, database_url, str(calls), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert process.stdout is not None
    assert process.stdout.readline().startswith("recorded")
    return process


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_sigterm_stores_every_record_then_ends_the_process_as_sigterm_does(request, database):
    url = request.getfixturevalue(f"{database}_url" if database == "sqlite" else "postgres_url")
    process = _start(url, 40_000)

    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == -signal.SIGTERM, stderr
    assert count_rows(url, "llm_calls") == 40_000
    assert count_rows(url, "sessions") == 1


def test_sigterm_keeps_the_users_own_handler_and_calls_it_after_storing(sqlite_url):
    process = _start(sqlite_url, 20_000, mode="user-handler")

    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)

    assert process.returncode == 3, stderr
    assert "user handler ran" in stdout
    assert count_rows(sqlite_url, "llm_calls") == 20_000


def test_sigint_stores_every_record(sqlite_url):
    process = _start(sqlite_url, 20_000)

    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)

    assert "KeyboardInterrupt" in stderr
    assert count_rows(sqlite_url, "llm_calls") == 20_000


POOL = textwrap.dedent(
    """
    import multiprocessing, sys
    from tests.process_workers import record_calls

    method, ending, url = sys.argv[1], sys.argv[2], sys.argv[3]
    context = multiprocessing.get_context(method)
    if ending == "process":
        child = context.Process(target=record_calls, args=(url,))
        child.start()
        child.join()
        print(child.exitcode)
    elif ending == "close-join":
        pool = context.Pool(4)
        print(sum(pool.starmap(record_calls, [(url,)] * 20)))
        pool.close()
        pool.join()
    else:  # "with": the context manager ends the pool with terminate()
        with context.Pool(4) as pool:
            print(sum(pool.starmap(record_calls, [(url,)] * 20)))
    """
)


def _run_pool(method: str, ending: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", POOL, method, ending, url],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
@pytest.mark.parametrize(("ending", "expected_calls"), [("process", 500), ("close-join", 10_000)])
def test_multiprocessing_workers_store_every_record(sqlite_url, method, ending, expected_calls):
    result = _run_pool(method, ending, sqlite_url)

    assert result.returncode == 0, result.stderr
    assert count_rows(sqlite_url, "llm_calls") == expected_calls
    assert count_rows(sqlite_url, "sessions") == expected_calls // 500


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_a_terminated_pool_ends_as_without_obsdeco(sqlite_url, method):
    """`with Pool()` ends its workers with terminate() (SIGTERM): obsdeco does not delay them
    (that can hang the pool's shutdown), so what they had not stored yet is lost, as documented;
    the program ends normally, with every task's result."""
    for _ in range(3):
        result = _run_pool(method, "with", sqlite_url)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["10000"]
