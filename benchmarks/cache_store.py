"""Response cache storage benchmark: the caller's cost of `put()` and `get()` on each backend.

    python benchmarks/cache_store.py [--entries N] [--redis-url URL]

For memory://, SQLite (a temporary file), PostgreSQL (a schema of its own, dropped after) and
Redis (a key prefix of its own, deleted after), unencrypted and encrypted: `put()` on the
caller's thread, the time `flush()` takes to write them all (the writer thread's throughput),
then `get()` of each, served by the backend itself (hits), and of absent keys (misses). The
response is a 1.4 KB chat completion with 8 headers. Also times what the SDK side of a hit adds:
the OpenAI SDK's parsing of that body into a ChatCompletion. Prints a table and writes
benchmarks/results/cache_store.json. A backend that cannot be reached is left out, and said so.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis
import sqlalchemy
from common import POSTGRES_URL, environment, postgres_schema, write_results
from openai.types.chat import ChatCompletion

from obsdeco.config import key_bytes
from obsdeco.engine.cache_backends.base import CacheCounters, RemoteBackend
from obsdeco.engine.cache_backends.database import DatabaseBackend
from obsdeco.engine.cache_backends.memory import MemoryCache
from obsdeco.engine.cache_backends.pending import WriteBehindCache
from obsdeco.engine.cache_backends.redis import RedisBackend
from obsdeco.engine.cache_store import CachedResponse, ResponseCache
from obsdeco.privacy.encryption import Cipher

BODY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "A fairly ordinary answer. " * 40},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 420, "completion_tokens": 180, "total_tokens": 600},
        "system_fingerprint": "fp_bench",
    }
).encode()
HEADERS = (
    ("content-type", "application/json"),
    ("date", "Tue, 01 Dec 2026 12:00:00 GMT"),
    ("openai-model", "gpt-4o-mini-2024-07-18"),
    ("openai-processing-ms", "812"),
    ("x-request-id", "req_0123456789abcdef"),
    ("x-ratelimit-remaining-requests", "9999"),
    ("x-ratelimit-remaining-tokens", "199580"),
    ("cache-control", "no-cache, must-revalidate"),
)
RESPONSE = CachedResponse(200, HEADERS, BODY, time.time())


def micros(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_us": statistics.median(ordered) * 1e6,
        "p99_us": ordered[int(len(ordered) * 0.99) - 1] * 1e6,
    }


def timed_each(action: Callable[[str], object], keys: list[str]) -> list[float]:
    samples = []
    clock = time.perf_counter
    for key in keys:
        started = clock()
        action(key)
        samples.append(clock() - started)
    return samples


def measure(cache: ResponseCache, entries: int) -> dict[str, object]:
    keys = [f"{uuid.uuid4().hex}{index}" for index in range(entries)]
    absent = [f"absent-{uuid.uuid4().hex}" for _ in range(entries)]
    cache.get("warm-up")
    puts = timed_each(lambda key: cache.put(key, RESPONSE, 3600.0), keys)
    started = time.perf_counter()
    if not cache.flush(timeout_s=300):
        raise RuntimeError("the writes did not finish in 300 s")
    written_s = time.perf_counter() - started + sum(puts)
    hits = timed_each(cache.get, keys)
    if any(cache.get(key) != RESPONSE for key in keys[:20]):
        raise RuntimeError("a hit returned something else")
    misses = timed_each(cache.get, absent)
    return {
        "put": micros(puts),
        "get_hit": micros(hits),
        "get_miss": micros(misses),
        "writes_per_s": entries / written_s,
    }


@contextmanager
def redis_prefix(url: str) -> Iterator[str]:
    prefix = f"obsdeco:bench:{uuid.uuid4().hex[:12]}:"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(f"{prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        client.close()


def reachable(kind: str, url: str) -> str | None:
    try:
        if kind == "redis":
            client = redis.Redis.from_url(url, socket_connect_timeout=1)
            client.ping()
            client.close()
        else:
            engine = sqlalchemy.create_engine(url)
            with engine.connect():
                pass
            engine.dispose()
    except (redis.RedisError, sqlalchemy.exc.OperationalError) as exc:
        return f"{kind} unreachable ({type(exc).__name__}); left out"
    return None


def run_remote(
    backend: Callable[[], RemoteBackend], encrypted: bool, entries: int
) -> dict[str, object]:
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    cipher = Cipher(key_bytes(key)) if encrypted else None
    cache = WriteBehindCache(backend(), CacheCounters(), cipher)
    try:
        return measure(cache, entries)
    finally:
        cache.close()


def sdk_parse_us(repeats: int = 2000) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        ChatCompletion.model_validate(json.loads(BODY))
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=5_000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    results: dict[str, object] = {
        **environment(),
        "entries": args.entries,
        "body_bytes": len(BODY),
        "backends": {},
    }
    backends: dict[str, object] = results["backends"]  # type: ignore[assignment]
    notes: list[str] = []
    backends["memory"] = measure(MemoryCache(CacheCounters()), args.entries)
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/cache.db"
        for encrypted in (False, True):
            name = "sqlite" + (" encrypted" if encrypted else "")
            backends[name] = run_remote(lambda: DatabaseBackend(url), encrypted, args.entries)
    note = reachable("postgresql", POSTGRES_URL)
    if note is None:
        with postgres_schema() as url:
            for encrypted in (False, True):
                name = "postgresql" + (" encrypted" if encrypted else "")
                backends[name] = run_remote(lambda: DatabaseBackend(url), encrypted, args.entries)
    else:
        notes.append(note)
    note = reachable("redis", args.redis_url)
    if note is None:
        for encrypted in (False, True):
            with redis_prefix(args.redis_url) as prefix:
                name = "redis" + (" encrypted" if encrypted else "")
                backends[name] = run_remote(
                    lambda: RedisBackend(args.redis_url, prefix), encrypted, args.entries
                )
    else:
        notes.append(note)
    results["openai_sdk_parse_us"] = sdk_parse_us()
    results["notes"] = notes

    print(f"{args.entries} entries of {len(BODY)} bytes + 8 headers, µs median (p99)\n")
    print(f"{'backend':22} {'put':>16} {'get hit':>18} {'get miss':>18} {'writes/s':>10}")
    for name, row in backends.items():
        figures = row  # type: ignore[assignment]
        cells = [
            f"{figures[op]['median_us']:7.1f} ({figures[op]['p99_us']:6.1f})"  # type: ignore[index]
            for op in ("put", "get_hit", "get_miss")
        ]
        print(
            f"{name:22} {cells[0]:>16} {cells[1]:>18} {cells[2]:>18} "
            f"{figures['writes_per_s']:10.0f}"  # type: ignore[index]
        )
    parse_us = results["openai_sdk_parse_us"]
    print(f"\nOpenAI SDK parse of the body (json + ChatCompletion): {parse_us:.1f} µs")
    for note in notes:
        print(note)
    write_results("cache_store", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
