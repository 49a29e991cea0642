"""The response cache's storage: what `obsdeco.cache()` keeps, where, for how long, encrypted
or not, and what happens when its backend fails. Real SQLite, PostgreSQL and Redis."""

from __future__ import annotations

import base64
import logging
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence

import pytest
import redis
import sqlalchemy

import obsdeco
from obsdeco.config import get_settings, key_bytes
from obsdeco.engine.cache_backends.base import CacheCounters, RemoteBackend
from obsdeco.engine.cache_backends.database import DatabaseBackend
from obsdeco.engine.cache_backends.memory import MemoryCache
from obsdeco.engine.cache_backends.pending import WriteBehindCache
from obsdeco.engine.cache_backends.redis import RedisBackend
from obsdeco.engine.cache_store import CachedResponse, ResponseCache, open_cache, response_cache
from obsdeco.privacy.encryption import Cipher, EncryptionError
from tests.conftest import IN_CI, count_rows

REDIS_URL = os.environ.get("OBSDECO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
START = 1_000_000.0
BODY = bytes(range(256)) * 3 + b"\x1f\x8b gzip-ish"
RESPONSE = CachedResponse(
    status=203,
    headers=(
        ("content-type", "application/json"),
        ("set-cookie", "a=1"),
        ("set-cookie", "b=2"),
        ("x-note", "caf\u00e9 \u2603"),
    ),
    body=BODY,
    stored_at=START - 0.25,
)


def _redis_unreachable_reason() -> str | None:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
        return None
    except redis.RedisError as exc:
        return f"Redis unreachable at {REDIS_URL} ({type(exc).__name__})"
    finally:
        client.close()


_REDIS_SKIP_REASON = _redis_unreachable_reason()


class Clock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def _response(text: str) -> CachedResponse:
    return CachedResponse(200, (("content-type", "text/plain"),), text.encode(), START)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def counters() -> CacheCounters:
    return CacheCounters()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of the test's own on the Redis server; its keys are deleted afterwards."""
    if _REDIS_SKIP_REASON is not None:
        if IN_CI:
            pytest.fail(f"{_REDIS_SKIP_REASON}; in CI the Redis tests must run")
        pytest.skip(_REDIS_SKIP_REASON)
    prefix = f"obsdeco:test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


Open = Callable[..., ResponseCache]
"""open(encryption_key=None, **options) -> a new cache on the test's store (the same each time)."""


def _opener(
    kind: str, request: pytest.FixtureRequest, clock: Clock, counters: CacheCounters
) -> Iterator[Open]:
    opened: list[ResponseCache] = []

    def backend() -> RemoteBackend:
        if kind == "redis":
            return RedisBackend(REDIS_URL, prefix=request.getfixturevalue("redis_prefix"))
        return DatabaseBackend(request.getfixturevalue(f"{kind}_url"))

    def open_one(encryption_key: str | None = None, **options: int) -> ResponseCache:
        if kind == "memory":
            cache: ResponseCache = MemoryCache(counters, clock=clock, **options)
        else:
            cipher = None if encryption_key is None else Cipher(key_bytes(encryption_key))
            cache = WriteBehindCache(backend(), counters, cipher, clock=clock, **options)
        opened.append(cache)
        return cache

    yield open_one
    for cache in opened:
        cache.close()


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def remote(request: pytest.FixtureRequest, clock: Clock, counters: CacheCounters) -> Iterator[Open]:
    """Opens write-behind caches on one store: SQLite, then PostgreSQL, then Redis."""
    yield from _opener(request.param, request, clock, counters)


@pytest.fixture(params=["memory", "sqlite", "postgres", "redis"])
def any_cache(
    request: pytest.FixtureRequest, clock: Clock, counters: CacheCounters
) -> Iterator[Open]:
    """Opens caches of every kind: memory, then the three write-behind ones."""
    yield from _opener(request.param, request, clock, counters)


class Gate:
    """A real backend whose writes wait until the test opens the gate."""

    def __init__(self, inner: RemoteBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.opened = threading.Event()
        self.read = inner.read
        self.delete_expired = inner.delete_expired
        self.close = inner.close
        self.forget_after_fork = inner.forget_after_fork

    def write(self, items: Sequence[tuple[str, bytes, float | None]], now: float) -> None:
        self.opened.wait()
        self.inner.write(items, now)


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("encrypted", [False, True])
def test_status_headers_and_raw_body_come_back_exactly(any_cache, encrypted, counters):
    key = _key() if encrypted else None
    cache = any_cache(key)

    cache.put("request-1", RESPONSE, 60.0)
    assert cache.get("request-1") == RESPONSE  # at once, before any write
    assert cache.flush(timeout_s=30) is True
    assert cache.pending == 0

    assert cache.get("request-1") == RESPONSE
    assert cache.get("request-2") is None
    assert (counters.errors, counters.writes_dropped) == (0, 0)


def test_once_flushed_another_cache_on_the_same_store_serves_it(remote):
    writer = remote()
    writer.put("shared", RESPONSE, None)
    writer.flush(timeout_s=30)

    assert remote().get("shared") == RESPONSE


def test_a_repeat_is_served_from_memory_until_the_write_lands(sqlite_url, counters, clock):
    gate = Gate(DatabaseBackend(sqlite_url))
    cache = WriteBehindCache(gate, counters, None, clock=clock)
    other_process = WriteBehindCache(DatabaseBackend(sqlite_url), counters, None, clock=clock)

    cache.put("r", RESPONSE, 60.0)

    assert cache.get("r") == RESPONSE
    assert cache.pending == 1
    assert other_process.get("r") is None
    assert cache.flush(timeout_s=0.01) is False
    gate.opened.set()
    assert cache.flush(timeout_s=30) is True
    assert cache.pending == 0
    assert other_process.get("r") == RESPONSE
    assert count_rows(sqlite_url, "response_cache") == 1
    cache.close()
    other_process.close()


def test_a_second_put_of_a_key_replaces_the_first(any_cache):
    cache = any_cache()
    cache.put("k", _response("first"), 60.0)
    cache.put("k", _response("second"), 60.0)
    assert cache.get("k") == _response("second")
    cache.flush(timeout_s=30)
    assert cache.get("k") == _response("second")


# --- time to live -----------------------------------------------------------------------------


def test_an_entry_is_served_until_its_ttl_and_never_after(any_cache, clock):
    cache = any_cache()
    cache.put("short", RESPONSE, 10.0)
    cache.put("forever", RESPONSE, None)
    cache.flush(timeout_s=30)

    clock.advance(9.999)
    assert cache.get("short") == RESPONSE
    clock.advance(0.001)
    assert cache.get("short") is None
    clock.advance(10 * 365 * 86_400)
    assert cache.get("forever") == RESPONSE


def test_a_pending_entry_expires_too_and_is_then_not_written(remote, clock, counters):
    cache = remote()
    gate = Gate(cache.backend)  # type: ignore[attr-defined]
    cache.backend = gate  # type: ignore[attr-defined]
    cache.put("short", RESPONSE, 5.0)
    clock.advance(5.0)

    assert cache.get("short") is None
    gate.opened.set()
    cache.flush(timeout_s=30)
    assert gate.inner.read("short") is None  # never written at all
    assert (counters.errors, counters.writes_dropped) == (0, 0)


def test_no_ttl_or_a_non_positive_one_stores_nothing(any_cache):
    cache = any_cache()
    cache.put("zero", RESPONSE, 0.0)
    cache.put("negative", RESPONSE, -1.0)
    cache.flush(timeout_s=30)
    assert cache.get("zero") is None
    assert cache.get("negative") is None


def test_expired_rows_are_deleted_when_met_and_every_few_minutes(database_url, clock, counters):
    cache = WriteBehindCache(DatabaseBackend(database_url), counters, None, clock=clock)
    cache.put("met", RESPONSE, 10.0)
    cache.put("unmet", RESPONSE, 10.0)
    cache.put("long", RESPONSE, 1_000.0)
    cache.put("forever", RESPONSE, None)
    cache.flush(timeout_s=30)
    assert count_rows(database_url, "response_cache") == 4

    clock.advance(10.0)
    assert cache.get("met") is None
    cache.flush(timeout_s=30)
    assert count_rows(database_url, "response_cache") == 3

    clock.advance(300.0)  # the periodic purge is due: every expired row goes
    cache.put("new", RESPONSE, 60.0)
    cache.flush(timeout_s=30)
    assert _keys(database_url) == ["forever", "long", "new"]
    cache.close()


def _keys(url: str) -> list[str]:
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(sqlalchemy.text("SELECT key FROM response_cache ORDER BY key"))
        keys = [row[0] for row in rows]
    engine.dispose()
    return keys


def test_redis_expires_entries_itself(redis_prefix, clock, counters):
    cache = WriteBehindCache(RedisBackend(REDIS_URL, redis_prefix), counters, None, clock=clock)
    cache.put("k", RESPONSE, 90.0)
    cache.put("forever", RESPONSE, None)
    cache.flush(timeout_s=30)

    client = redis.Redis.from_url(REDIS_URL)
    assert 89_000 < client.pttl(f"{redis_prefix}k") <= 90_000
    assert client.pttl(f"{redis_prefix}forever") == -1
    client.close()
    cache.close()


# --- encryption -------------------------------------------------------------------------------


def _stored_values(remote_cache: ResponseCache) -> list[bytes]:
    backend = remote_cache.backend  # type: ignore[attr-defined]
    if isinstance(backend, RedisBackend):
        return [backend.client.get(key) for key in backend.client.scan_iter(f"{backend.prefix}*")]
    with backend.engine.connect() as connection:
        return [
            bytes(row[0])
            for row in connection.execute(sqlalchemy.text("SELECT value FROM response_cache"))
        ]


def test_an_encrypted_value_shows_nothing_and_is_a_miss_with_another_or_no_key(
    remote, counters, caplog
):
    key = _key()
    writer = remote(key)
    secret = CachedResponse(200, (("x-secret-header", "hunter2"),), b"the secret body", START)
    writer.put("k", secret, None)
    writer.flush(timeout_s=30)

    (stored,) = _stored_values(writer)
    assert b"secret" not in stored
    assert b"hunter2" not in stored
    with caplog.at_level(logging.WARNING, logger="obsdeco.cache"):
        other_key, no_key = remote(_key()), remote()
        assert other_key.get("k") is None
        assert other_key.get("k") is None
        assert no_key.get("k") is None
    assert remote(key).get("k") == secret
    assert counters.errors == 3
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert "encrypted with another key" in messages[0]
    assert "no encryption_key is configured" in messages[1]


def test_an_unencrypted_value_is_a_miss_once_a_key_is_configured(remote, counters):
    plain = remote()
    plain.put("k", RESPONSE, None)
    plain.flush(timeout_s=30)
    assert remote(_key()).get("k") is None
    assert counters.errors == 1


def test_a_damaged_or_moved_value_is_a_miss(sqlite_url, counters, clock):
    key = _key()
    cipher = Cipher(key_bytes(key))
    cache = WriteBehindCache(DatabaseBackend(sqlite_url), counters, cipher, clock=clock)
    cache.put("a", RESPONSE, None)
    cache.flush(timeout_s=30)
    engine = sqlalchemy.create_engine(sqlite_url)
    with engine.begin() as connection:
        value = connection.execute(sqlalchemy.text("SELECT value FROM response_cache")).scalar_one()
        damaged = value[:-1] + bytes([value[-1] ^ 1])
        connection.execute(
            sqlalchemy.text(
                "INSERT INTO response_cache VALUES "
                "('moved', :v, NULL), ('damaged', :d, NULL), ('junk', :j, NULL)"
            ),
            {"v": value, "d": damaged, "j": b"not a cached value"},
        )
    engine.dispose()

    assert cache.get("moved") is None
    assert cache.get("damaged") is None
    assert cache.get("junk") is None
    assert cache.get("a") == RESPONSE
    assert counters.errors == 3
    cache.close()


def test_cipher_seals_bytes_bound_to_their_context():
    cipher = Cipher(os.urandom(32))
    sealed = cipher.seal(b"\x00body\xff", b"context")
    assert cipher.unseal(sealed, b"context") == b"\x00body\xff"
    with pytest.raises(EncryptionError, match="damaged"):
        cipher.unseal(sealed, b"another context")
    with pytest.raises(EncryptionError, match="damaged"):
        cipher.unseal(sealed[:-1], b"context")
    with pytest.raises(EncryptionError, match="another key"):
        Cipher(os.urandom(32)).unseal(sealed, b"context")


# --- a failing backend ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:1/0", "postgresql+psycopg://postgres@127.0.0.1:1/test"],
)
def test_an_unreachable_backend_misses_and_drops_writes_counted_logged_once(
    url, counters, clock, caplog
):
    with caplog.at_level(logging.WARNING, logger="obsdeco.cache"):
        cache = open_cache(url, counters, clock=clock)
        cache.put("k", RESPONSE, None)
        assert cache.get("k") == RESPONSE  # still pending
        assert cache.flush(timeout_s=30) is True
        assert (cache.pending, counters.errors, counters.writes_dropped) == (0, 1, 1)

        assert cache.get("k") is None  # not even asked: it failed a moment ago
        cache.put("k2", RESPONSE, None)
        cache.flush(timeout_s=30)
        assert (counters.errors, counters.writes_dropped) == (1, 2)

        clock.advance(0.5)  # the retry is due: asked again, fails again
        assert cache.get("k") is None
        assert (counters.errors, counters.writes_dropped) == (2, 2)
        cache.close()
    (message,) = [record.getMessage() for record in caplog.records]
    assert "response cache cannot use" in message
    assert ":1" in message


def test_a_backend_that_comes_back_is_used_again_and_the_recovery_logged(
    tmp_path, counters, clock, caplog
):
    folder = tmp_path / "not-yet"
    cache = open_cache(f"sqlite:///{folder}/cache.db", counters, clock=clock)
    with caplog.at_level(logging.WARNING, logger="obsdeco.cache"):
        assert cache.get("k") is None
        assert counters.errors == 1
        folder.mkdir()
        clock.advance(0.5)
        assert cache.get("k") is None
        cache.put("k", RESPONSE, None)
        cache.flush(timeout_s=30)
    assert cache.get("k") == RESPONSE
    assert (counters.errors, counters.writes_dropped) == (1, 0)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert "answers again" in messages[1]
    cache.close()


def test_obsdeco_stats_count_the_cache_faults():
    obsdeco.configure(cache_url="redis://127.0.0.1:1/0")
    before = obsdeco.stats()
    cache = response_cache(get_settings())
    cache.put("k", RESPONSE, None)
    assert obsdeco.flush(timeout=30) is True

    after = obsdeco.stats()
    assert after.cache_pending == 0
    assert after.cache_errors - before.cache_errors == 1
    assert after.cache_writes_dropped - before.cache_writes_dropped == 1


def test_pending_writes_beyond_the_bound_are_dropped(sqlite_url, counters, clock):
    gate = Gate(DatabaseBackend(sqlite_url))
    cache = WriteBehindCache(gate, counters, None, clock=clock, max_pending=3)
    for index in range(5):
        cache.put(f"k{index}", RESPONSE, None)
    cache.put("k0", _response("replaced"), None)  # replacing a pending entry takes no room

    assert cache.pending == 3
    assert counters.writes_dropped == 2
    assert cache.get("k3") is None
    gate.opened.set()
    cache.flush(timeout_s=30)
    assert _keys(sqlite_url) == ["k0", "k1", "k2"]
    assert cache.get("k0") == _response("replaced")
    cache.close()


# --- the memory backend -----------------------------------------------------------------------


def test_memory_evicts_the_least_recently_used_beyond_its_entry_bound(counters):
    cache = MemoryCache(counters, max_entries=3)
    for key in "abc":
        cache.put(key, _response(key), None)
    assert cache.get("a") == _response("a")  # a is now the most recently used
    cache.put("d", _response("d"), None)

    assert cache.entries == 3
    assert cache.get("b") is None
    assert [cache.get(key) for key in "acd"] == [_response(key) for key in "acd"]


def test_memory_holds_at_most_its_byte_bound(counters):
    one = _response("x" * 1000)
    cache = MemoryCache(counters, max_bytes=one.size * 2)
    for key in "abc":
        cache.put(key, one, None)

    assert cache.entries == 2
    assert cache.bytes == one.size * 2
    assert cache.get("a") is None
    cache.put("huge", _response("x" * (one.size * 2)), None)
    assert cache.get("huge") is None
    assert counters.writes_dropped == 1
    assert cache.entries == 2


# --- one cache per configuration ----------------------------------------------------------------


def test_the_same_cache_serves_while_url_and_key_stay(tmp_path):
    url = f"sqlite:///{tmp_path}/cache.db"
    obsdeco.configure(cache_url=url)
    first = response_cache(get_settings())
    obsdeco.configure(cache_url=url, project="another")
    assert response_cache(get_settings()) is first

    first.put("k", RESPONSE, None)
    obsdeco.configure(cache_url=url, encryption_key=_key())
    encrypted = response_cache(get_settings())
    assert encrypted is not first
    assert obsdeco.flush(timeout=30) is True
    assert count_rows(url, "response_cache") == 1  # the replaced cache wrote what it held
    assert encrypted.get("k") is None  # written unencrypted: not served to an encrypted cache

    obsdeco.configure()
    assert isinstance(response_cache(get_settings()), MemoryCache)


def test_cache_urls_a_cache_cannot_use_are_refused_at_configure(monkeypatch):
    monkeypatch.setitem(obsdeco.storage._factories, "teststore", lambda url: None)
    with pytest.raises(ValueError, match="cache_url 'teststore://x' is not supported"):
        obsdeco.configure(cache_url="teststore://x")
    with pytest.raises(ValueError, match="cache_url 'mysql://h/db' is not supported"):
        obsdeco.configure(cache_url="mysql://h/db")


# --- concurrency and exit -----------------------------------------------------------------------


def test_threads_hammering_get_and_put_see_only_whole_right_answers(any_cache, counters):
    cache = any_cache(_key())
    keys = [f"key-{index}" for index in range(40)]
    wrong: list[tuple[str, CachedResponse]] = []
    start = threading.Barrier(8)

    def work(seed: int) -> None:
        start.wait()
        for step in range(300):
            key = keys[(seed * 7 + step) % len(keys)]
            got = cache.get(key)
            if got is not None and got != _response(key):
                wrong.append((key, got))
            if step % 3 == seed % 3:
                cache.put(key, _response(key), None)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.flush(timeout_s=60) is True

    assert wrong == []
    assert [cache.get(key) for key in keys] == [_response(key) for key in keys]
    assert (counters.errors, counters.writes_dropped) == (0, 0)


PUT_AND_EXIT = textwrap.dedent(
    """
    import sys, time
    import obsdeco
    from obsdeco.engine.cache_store import CachedResponse, response_cache

    obsdeco.configure(database_url=sys.argv[2], cache_url=sys.argv[1])
    cache = response_cache(obsdeco.get_settings())
    for index in range(int(sys.argv[3])):
        cache.put(f"k{index}", CachedResponse(200, (), b"body %d" % index, time.time()), None)
    print(cache.pending > 0)
    """
)


def test_pending_cache_writes_are_written_at_interpreter_exit(tmp_path):
    url = f"sqlite:///{tmp_path}/cache.db"
    result = subprocess.run(
        [sys.executable, "-c", PUT_AND_EXIT, url, f"sqlite:///{tmp_path}/store.db", "3000"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"  # writes were still pending at exit
    assert count_rows(url, "response_cache") == 3_000


def _child_reads_and_writes() -> tuple[bool, bool]:
    cache = response_cache(get_settings())
    cache.put("child", _response("child"), None)
    return cache.get("parent") == RESPONSE, cache.flush(timeout_s=30)


def test_a_forked_child_opens_a_cache_of_its_own(tmp_path):
    url = f"sqlite:///{tmp_path}/cache.db"
    obsdeco.configure(cache_url=url)
    parent = response_cache(get_settings())
    parent.put("parent", RESPONSE, None)
    parent.flush(timeout_s=30)

    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply(_child_reads_and_writes) == (True, True)

    assert _keys(url) == ["child", "parent"]
    assert parent.get("child") == _response("child")
