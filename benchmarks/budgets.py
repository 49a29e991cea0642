"""Budget benchmark: what a hard budget adds to each LLM call, in one run.

    python benchmarks/budgets.py [--calls N] [--blocks B]

Figures are medians of per-block medians of one call's `budgets.reserve` (before it is sent)
and `budgets.settle` (when it ends) together, for a gpt-4o chat request of two messages:

- no budget configured (what every call pays once budgets exist in obsdeco);
- a session budget (`@observe_session(budget_usd=...)`) and an agent budget, kept in this
  process: the worst-case estimate, one reservation under a lock, one settlement;
- the worst-case estimate alone (`worst_case_usd`);
- a project budget on PostgreSQL (table `budget_accounts`, in a schema of its own, dropped
  afterwards): µs per reservation and per settlement over a local socket, and the round trips
  a call's reservation and settlement make to the server together, counted from libpq's
  protocol trace (a simple query or an extended-protocol Sync each waits for the server once;
  the store's pool pings a connection before each use).

Prints a table and writes benchmarks/results/budgets.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import sqlalchemy
from common import environment, postgres_schema, write_results

import obsdeco
from obsdeco.engine import budgets
from obsdeco.engine.worst_case import worst_case_usd
from obsdeco.models import LLMCall, ModelProvider, Session
from obsdeco.runtime import get_runtime

BODY = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    "max_tokens": 50,
}
LIMIT_USD = 1e9
"""Never reached: every reservation is admitted."""


def _call(session: Session) -> LLMCall:
    return LLMCall(
        session_id=session.id,
        project_name=session.project_name,
        provider=ModelProvider.OPENAI,
        model="gpt-4o",
        prompt_tokens=24,
        completion_tokens=3,
        latency_ms=300.0,
    )


def _budgeted(session: Session, agent: str | None) -> Callable[[], None]:
    call = _call(session)

    def one() -> None:
        held = budgets.reserve(
            session=session,
            agent_name=agent,
            provider_name="openai",
            model="gpt-4o",
            api="chat",
            body=BODY,
        )
        budgets.settle(held, call)

    return one


def _block_median(action: Callable[[], Any], size: int) -> float:
    times = []
    for _ in range(size):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def _medians(actions: dict[str, Callable[[], Any]], blocks: int, size: int) -> dict[str, float]:
    """Each action's median per call (µs), its blocks interleaved with the others'."""
    found: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(blocks):
        for name, action in actions.items():
            found[name].append(_block_median(action, size))
    return {name: statistics.median(values) for name, values in found.items()}


def in_process_figures(folder: str, blocks: int, size: int) -> dict[str, float]:
    obsdeco.configure(database_url=f"sqlite:///{folder}/calls.db", project="bench")
    collector = obsdeco.MetricsCollector("bench")
    session = collector.start_session("bench")
    unbudgeted = _budgeted(session, None)
    none = _medians({"none": unbudgeted}, blocks, size)["none"]
    token = budgets.enter_session_budget(session, LIMIT_USD)
    session_budget = _medians({"session": _budgeted(session, None)}, blocks, size)["session"]
    budgets.exit_session_budget(token)
    agent_budget = obsdeco.Budget(limit_usd=LIMIT_USD, scope="agent", agent="Writer")
    obsdeco.configure(
        database_url=f"sqlite:///{folder}/calls.db", project="bench", budgets=[agent_budget]
    )
    prices = get_runtime().prices
    medians = _medians(
        {
            "agent": _budgeted(session, "Writer"),
            "estimate": lambda: worst_case_usd(prices, "openai", "gpt-4o", "chat", BODY),
        },
        blocks,
        size,
    )
    collector.end_session(session)
    obsdeco.flush()
    return {
        "no_budget_us": none,
        "session_budget_us": session_budget,
        "agent_budget_us": medians["agent"],
        "worst_case_estimate_us": medians["estimate"],
    }


class RoundTrips:
    """Counts what each PostgreSQL connection of an engine waits for the server on, from
    libpq's trace of the messages it sends."""

    def __init__(self, engine: sqlalchemy.Engine, folder: str) -> None:
        self._traces: list[Path] = []
        self._handles: list[TextIO] = []
        self._folder = folder
        sqlalchemy.event.listen(engine, "connect", self._trace)

    def _trace(self, dbapi_connection: Any, _record: Any) -> None:
        path = Path(self._folder) / f"trace-{len(self._traces)}.txt"
        handle = path.open("w")  # libpq writes to its descriptor until the connection closes
        dbapi_connection.pgconn.trace(handle.fileno())
        self._traces.append(path)
        self._handles.append(handle)

    def count(self) -> int:
        """The round trips of the connections opened so far, once they are closed."""
        for handle in self._handles:
            handle.close()
        total = 0
        for path in self._traces:
            for line in path.read_text().splitlines():
                fields = line.split("\t")
                sent = "F" in fields[:2]
                if sent and any(field in ("Query", "Sync") for field in fields):
                    total += 1
        return total


def postgres_figures(folder: str, blocks: int, size: int) -> dict[str, float]:
    with postgres_schema() as url:
        project = obsdeco.Budget(limit_usd=LIMIT_USD, scope="project", window="1d")
        obsdeco.configure(
            database_url=url,
            project="bench",
            budgets=[project],
        )
        engine = get_runtime().backend.engine  # type: ignore[attr-defined]
        collector = obsdeco.MetricsCollector("bench")
        session = collector.start_session("bench")
        call = _call(session)
        reserve_times: list[float] = []
        settle_times: list[float] = []
        _budgeted(session, None)()  # the table and the account's row exist from here
        obsdeco.flush()
        engine.dispose()
        trips = RoundTrips(engine, folder)  # connections opened from now on are traced
        for _ in range(blocks * size):
            start = time.perf_counter()
            held = budgets.reserve(
                session=session,
                agent_name=None,
                provider_name="openai",
                model="gpt-4o",
                api="chat",
                body=BODY,
            )
            reserved = time.perf_counter()
            budgets.settle(held, call)
            reserve_times.append(reserved - start)
            settle_times.append(time.perf_counter() - reserved)
        engine.dispose()  # libpq writes out its trace as each connection closes
        round_trips = trips.count() / (blocks * size)
        collector.end_session(session)
        obsdeco.flush()
        obsdeco.configure(database_url=f"sqlite:///{folder}/calls.db")
    return {
        "reserve_us": statistics.median(reserve_times) * 1e6,
        "settle_us": statistics.median(settle_times) * 1e6,
        "round_trips_per_call": round_trips,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2_000, help="calls per block")
    parser.add_argument("--blocks", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        local = in_process_figures(folder, args.blocks, args.calls)
        shared = postgres_figures(folder, args.blocks, max(args.calls // 10, 1))
    print("Budget check per call, reserve + settle (median, µs):")
    print(f"  no budget configured          {local['no_budget_us']:7.2f}")
    print(f"  session budget (in process)   {local['session_budget_us']:7.2f}")
    print(f"  agent budget (in process)     {local['agent_budget_us']:7.2f}")
    print(f"  of which the worst case       {local['worst_case_estimate_us']:7.2f}")
    print("\nProject budget on PostgreSQL (median, µs; round trips counted by libpq):")
    print(f"  reserve                       {shared['reserve_us']:7.1f}")
    print(f"  settle                        {shared['settle_us']:7.1f}")
    print(f"  round trips, reserve + settle {shared['round_trips_per_call']:7.2f}")
    write_results(
        "budgets", {"environment": environment(), "in_process": local, "postgresql": shared}
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
