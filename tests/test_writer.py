"""The background writer: batching, flush, concurrency, outages, bounds, bad records."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import partial

import pytest
from sqlalchemy.engine import make_url

import obsdeco
from obsdeco.analyzers import PriceTable, session_totals
from obsdeco.models import LLMCall, ModelProvider, Session
from obsdeco.storage import SessionState, SQLAlchemyStorage, TransientStorageError, WriteBatch
from obsdeco.writer import Writer, WriterCounters
from tests.conftest import count_rows

SUMMARIZE = partial(session_totals, prices=PriceTable())


def _call(session_id: str = "s-1", **fields) -> LLMCall:
    values = {
        "session_id": session_id,
        "project_name": "test",
        "provider": ModelProvider.OPENAI,
        "model": "gpt-4o",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "latency_ms": 100.0,
    }
    values.update(fields)
    return LLMCall(**values)


class SpyStorage(SQLAlchemyStorage):
    """The real SQLite/PostgreSQL storage, remembering the size of each committed batch."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.batch_sizes: list[int] = []

    def write(self, batch: WriteBatch) -> None:
        super().write(batch)
        self.batch_sizes.append(len(batch))


def test_records_are_committed_in_bounded_batches(sqlite_url):
    storage = SpyStorage(sqlite_url)
    writer = Writer(storage, WriterCounters(), SUMMARIZE, max_queue_size=1_000, batch_size=3)
    for _ in range(10):
        writer.submit(_call())

    assert writer.flush(timeout=10)

    assert sum(storage.batch_sizes) == 10
    assert max(storage.batch_sizes) <= 3
    assert count_rows(sqlite_url, "llm_calls") == 10
    writer.stop()


def test_flush_waits_for_everything_recorded_before_it(configured):
    collector = obsdeco.MetricsCollector("test")
    session = collector.start_session("flush")
    for index in range(500):
        collector.record_llm_call(
            session, provider="openai", model_name="gpt-4o", latency_ms=index, prompt_tokens=1
        )

    assert obsdeco.flush(timeout=30) is True

    assert count_rows(configured, "llm_calls") == 500
    assert obsdeco.stats().pending == 0


def test_ten_threads_of_a_thousand_calls_arrive_exactly(configured):
    dropped_before = obsdeco.stats().dropped
    collector = obsdeco.MetricsCollector("test")
    session = collector.start_session("concurrent")
    start = threading.Barrier(10)

    def record_many() -> None:
        start.wait()
        for _ in range(1_000):
            collector.record_llm_call(
                session,
                provider=ModelProvider.ANTHROPIC,
                model_name="claude-haiku-4-5",
                prompt_tokens=3,
                completion_tokens=2,
                latency_ms=10,
            )

    threads = [threading.Thread(target=record_many) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    collector.end_session(session)

    assert obsdeco.flush(timeout=60)
    assert count_rows(configured, "llm_calls") == 10_000
    assert obsdeco.get_report(session.id).totals.calls == 10_000
    assert obsdeco.stats().dropped == dropped_before


def test_sqlite_unreachable_at_start_then_reachable_loses_nothing(tmp_path, caplog):
    folder = tmp_path / "not-yet"
    url = f"sqlite:///{folder}/obsdeco.db"
    obsdeco.configure(database_url=url)
    before = obsdeco.stats()
    collector = obsdeco.MetricsCollector("test")
    session = collector.start_session("outage")
    for _ in range(50):
        collector.record_llm_call(session, provider="openai", model_name="gpt-4o", latency_ms=1)
    collector.end_session(session)

    with caplog.at_level(logging.WARNING, logger="obsdeco"):
        assert obsdeco.flush(timeout=0.3) is False
    assert obsdeco.stats().write_retries > before.write_retries
    assert "cannot reach its database" in caplog.text

    folder.mkdir()
    assert obsdeco.flush(timeout=30) is True

    assert count_rows(url, "llm_calls") == 50
    assert count_rows(url, "sessions") == 1
    assert obsdeco.stats().dropped == before.dropped


@contextmanager
def _tcp_forwarder(listen_port: int, target: tuple[str, int]) -> Iterator[None]:
    """Forward 127.0.0.1:listen_port to target, for as long as the block runs."""
    server = socket.create_server(("127.0.0.1", listen_port))
    stop = threading.Event()
    sockets: list[socket.socket] = [server]

    def pump(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def accept() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(target)
            sockets.extend([client, upstream])
            threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield
    finally:
        stop.set()
        acceptor.join()
        for sock in sockets:
            sock.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_postgres_unreachable_at_start_then_reachable_loses_nothing(postgres_url):
    real = make_url(postgres_url)
    port = _free_port()
    through_proxy = real.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    obsdeco.configure(database_url=through_proxy)
    retries_before = obsdeco.stats().write_retries
    collector = obsdeco.MetricsCollector("test")
    session = collector.start_session("outage")
    for _ in range(200):
        collector.record_llm_call(session, provider="openai", model_name="gpt-4o", latency_ms=1)
    collector.end_session(session)

    assert obsdeco.flush(timeout=0.3) is False
    assert obsdeco.stats().write_retries > retries_before

    with _tcp_forwarder(port, (real.host, real.port)):
        assert obsdeco.flush(timeout=30) is True
        obsdeco.configure(database_url=postgres_url)

    assert count_rows(postgres_url, "llm_calls") == 200
    assert count_rows(postgres_url, "sessions") == 1


def test_records_beyond_the_queue_bound_are_counted_and_logged(tmp_path, caplog):
    obsdeco.configure(database_url=f"sqlite:///{tmp_path}/missing/db.sqlite", max_queue_size=20)
    before = obsdeco.stats()
    collector = obsdeco.MetricsCollector("test")
    session = collector.start_session("bounded")
    with caplog.at_level(logging.WARNING, logger="obsdeco"):
        for _ in range(30):
            collector.record_llm_call(session, provider="openai", model_name="gpt-4o", latency_ms=1)

    stats = obsdeco.stats()
    dropped = stats.dropped_queue_full - before.dropped_queue_full
    # 31 records (the session row and 30 calls): what the bound cannot hold is counted.
    assert stats.pending + dropped == 31
    assert stats.pending <= 20
    assert dropped >= 11
    assert stats.queue_bound == 20
    assert "its queue is full (20 records held" in caplog.text
    (tmp_path / "missing").mkdir()


def test_a_burst_of_drops_is_logged_with_its_exact_count_once_it_ends(tmp_path, caplog):
    folder = tmp_path / "appears-later"
    storage = SQLAlchemyStorage(f"sqlite:///{folder}/db.sqlite")
    counters = WriterCounters()
    writer = Writer(storage, counters, SUMMARIZE, max_queue_size=20, batch_size=10)
    with caplog.at_level(logging.WARNING, logger="obsdeco"):
        for _ in range(500):
            writer.submit(_call())
        folder.mkdir()
        assert writer.flush(timeout=30)
    writer.stop()

    assert counters.dropped_queue_full == 480
    assert count_rows(f"sqlite:///{folder}/db.sqlite", "llm_calls") == 20
    drops = [record.getMessage() for record in caplog.records if "drop" in record.getMessage()]
    assert drops[0].startswith("obsdeco is dropping records: its queue is full (20 records held;")
    assert len(drops) == 2
    assert drops[1].startswith("obsdeco dropped 480 records (queue full) in the last ")
    assert drops[1].endswith("; 480 in all")


def test_last_error_is_cleared_once_the_database_is_back(tmp_path):
    folder = tmp_path / "appears-later"
    storage = SQLAlchemyStorage(f"sqlite:///{folder}/db.sqlite")
    counters = WriterCounters()
    writer = Writer(storage, counters, SUMMARIZE, max_queue_size=100, batch_size=10)
    writer.submit(_call())
    assert writer.flush(timeout=0.2) is False
    assert "OperationalError" in (counters.last_error or "")

    folder.mkdir()
    assert writer.flush(timeout=30)
    writer.stop()
    assert counters.last_error is None


def test_a_record_the_store_rejects_does_not_block_the_others(sqlite_url, caplog):
    storage = SQLAlchemyStorage(sqlite_url)
    counters = WriterCounters()
    writer = Writer(storage, counters, SUMMARIZE, max_queue_size=100, batch_size=100)
    first = _call()
    duplicate = first.model_copy()
    with caplog.at_level(logging.ERROR, logger="obsdeco"):
        for record in (first, _call(), duplicate, _call()):
            writer.submit(record)
        assert writer.flush(timeout=10)

    assert count_rows(sqlite_url, "llm_calls") == 3
    assert counters.dropped_rejected == 1
    assert counters.written == 3
    assert "rejected a record" in caplog.text
    writer.stop()


def test_a_rejected_row_is_reported_without_its_values(database_url, caplog):
    storage = SQLAlchemyStorage(database_url)
    counters = WriterCounters()
    writer = Writer(storage, counters, SUMMARIZE, max_queue_size=100, batch_size=100)
    first = _call(error_message="card 4111 1111 1111 1111", metadata={"user": "ada@example.com"})
    session = Session(project_name="test", name="n", metadata={"user": "ada@example.com"})
    with caplog.at_level(logging.ERROR, logger="obsdeco"):
        writer.submit(first)
        writer.submit(first.model_copy())  # the same id again: the store rejects it
        writer.submit(SessionState(session))
        writer.submit(SessionState(session.model_copy(update={"project_name": "p" * 300})))
        assert writer.flush(timeout=10)
    writer.stop()

    assert counters.dropped_rejected == (2 if "postgresql" in database_url else 1)
    reported = caplog.text + (counters.last_error or "")
    assert "rejected a record" in caplog.text
    assert "ada@example.com" not in reported
    assert "4111" not in reported


@pytest.mark.parametrize("batch_size", [1, 7])
def test_flush_markers_never_split_from_their_records(sqlite_url, batch_size):
    storage = SpyStorage(sqlite_url)
    writer = Writer(
        storage, WriterCounters(), SUMMARIZE, max_queue_size=1_000, batch_size=batch_size
    )
    for round_ in range(1, 4):
        for _ in range(5):
            writer.submit(_call())
        assert writer.flush(timeout=10)
        assert count_rows(sqlite_url, "llm_calls") == 5 * round_
    writer.stop()


class _FlakyStore:
    """A store that refuses the first `failures` writes with `error`, then keeps every batch."""

    def __init__(self, error: Exception, failures: int) -> None:
        self.error, self.failures = error, failures
        self.attempts = 0
        self.kept: list[WriteBatch] = []

    def write(self, batch: WriteBatch) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise self.error
        self.kept.append(batch)

    def close(self) -> None:
        pass


def test_a_transient_storage_error_is_retried_with_the_same_batch():
    store = _FlakyStore(TransientStorageError("the database is restarting"), failures=2)
    counters = WriterCounters()
    writer = Writer(store, counters, SUMMARIZE, max_queue_size=10, batch_size=10)  # type: ignore[arg-type]
    writer.submit(_call())
    assert writer.flush(timeout=30)
    writer.stop()

    assert store.attempts == 3
    assert [len(batch.calls) for batch in store.kept] == [1]
    assert (counters.write_retries, counters.dropped_rejected, counters.written) == (2, 0, 1)


def test_any_other_storage_error_rejects_the_record():
    store = _FlakyStore(ValueError("this store cannot hold that"), failures=10)
    counters = WriterCounters()
    writer = Writer(store, counters, SUMMARIZE, max_queue_size=10, batch_size=10)  # type: ignore[arg-type]
    writer.submit(_call())
    assert writer.flush(timeout=30)
    writer.stop()

    assert store.kept == []
    assert (counters.write_retries, counters.dropped_rejected) == (0, 1)
