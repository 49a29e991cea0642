"""A large, realistic PostgreSQL store filled with SQL: calls of several projects spread over
many days, their sessions and agent spans, repeat counts and hourly rollups.

Everything obsdeco's writer would have stored is computed by PostgreSQL itself (generate_series
and aggregates), so that ten million calls take minutes, not the hours that writing them
through obsdeco, or `rebuild_rollups()` (per-row Python) over them, would take.
`check_against_rebuild` proves the SQL computes what obsdeco's own rebuild does.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy

from obsdeco.storage import SQLAlchemyStorage, partitions
from obsdeco.storage.base import LONG_PROMPT_TOKENS
from obsdeco.storage.histogram import GAMMA, SMALLEST_MS
from obsdeco.storage.schema import call_rollups, llm_calls, request_hashes
from obsdeco.storage.schema_setup import prepare_schema

PROJECT = "bench"
OTHER_PROJECTS = ("support-bot", "search", "nightly-evals")
MODELS = (  # (provider, provider name, model)
    ("openai", "openai", "gpt-4o-mini"),
    ("openai", "openai", "gpt-4o"),
    ("anthropic", "anthropic", "claude-sonnet-4-5"),
    ("anthropic", "anthropic", "claude-haiku-4-5"),
    ("google", "gcp.gemini", "gemini-2.0-flash"),
)
AGENTS = ("Planner", "Researcher", "Writer", "Critic", "Router", None)
AGENT_MODELS = (1, 0, 2, 3, 0, 4)
"""The model each agent calls three times in four (the fourth, any model)."""
OPERATIONS = ("plan", "search", "draft", "review", "summarise")
"""Each agent does two: its own and the next."""
CALLS_PER_SESSION = 20
POPULAR_SHARE = 0.15
"""The share of calls whose request is one of a pool of popular ones (the others are unique)."""


@dataclass(frozen=True, slots=True)
class Seeded:
    """What was stored, and how long each part took."""

    calls: int
    project_calls: int
    sessions: int
    spans: int
    rollup_rows: int
    seconds: dict[str, float]


def _case(expression: str, values: tuple[object, ...]) -> str:
    arms = " ".join(
        f"WHEN {index} THEN {'NULL' if value is None else repr(value)}"
        for index, value in enumerate(values)
    )
    return f"CASE {expression} {arms} END"


def _random(n: str, salt: int, modulo: int) -> str:
    """A deterministic pseudo-random integer in [0, modulo) of row `n`."""
    return f"(abs(hashint8extended({n}, {salt})) % {modulo})"


def _calls_sql(project: str, first: int, rows: int, days: float, pool: int) -> str:
    """Calls first+1..first+rows of `project`, spread evenly over the `days` before the current
    hour (newest first, each a little jittered within its slot, so that a higher n is always
    older), in sessions of `CALLS_PER_SESSION` consecutive calls. A call is a repeat when it
    succeeded and an older call of the same request did."""
    seconds = days * 86_400 / rows
    agent = _random("n", 2, len(AGENTS))
    model = (
        f"(CASE WHEN {_random('n', 1, 4)} > 0 THEN {_case(agent, AGENT_MODELS)} "
        f"ELSE {_random('n', 19, len(MODELS))} END)"
    )
    outcome = _random("n", 3, 1000)
    popular = _random("n", 4, 1_000_000)
    skew = _random("n", 5, 1_000_000)
    return f"""
        INSERT INTO llm_calls (id, session_id, project_name, timestamp, provider, provider_name,
            model, agent_name, operation, prompt_tokens, completion_tokens, cached_tokens,
            cache_creation_tokens, reasoning_tokens, latency_ms, time_to_first_token_ms,
            streamed, success, error_type, retries, rate_limited_retries, request_hash,
            repeated, cache_hit, metadata)
        WITH numbered AS (
            SELECT n, {outcome} < 980 AS success,
                {popular} < {int(POPULAR_SHARE * 1_000_000)} AS popular,
                CASE WHEN {popular} < {int(POPULAR_SHARE * 1_000_000)}
                    THEN lpad(to_hex(({skew}::bigint * {skew} / 1000000 * {pool}) / 1000000),
                        32, 'a')
                    ELSE lpad(to_hex(n), 32, '0') END AS request_hash
            FROM generate_series({first + 1}::bigint, {first + rows}::bigint) AS g(n)
        ),
        oldest AS (  -- the oldest successful call of a popular request: the highest n
            SELECT request_hash, max(n) AS oldest FROM numbered
            WHERE popular AND success GROUP BY request_hash
        )
        SELECT lpad(to_hex(n), 32, '0'), lpad(to_hex(n / {CALLS_PER_SESSION}), 32, 'f'),
            '{project}',
            date_trunc('hour', now()) - make_interval(secs => (n - {first}) * {seconds!r}
                - {_random("n", 6, 1000)} * {seconds / 1000!r}),
            {_case(model, tuple(provider for provider, _, _ in MODELS))},
            {_case(model, tuple(name for _, name, _ in MODELS))},
            {_case(model, tuple(name for _, _, name in MODELS))},
            {_case(agent, AGENTS)},
            {_case(f"({agent} + {_random('n', 7, 2)}) % {len(OPERATIONS)}", OPERATIONS)},
            CASE WHEN {outcome} < 995 THEN 80 + {_random("n", 8, 60)}
                * {_random("n", 9, 60)} * {_random("n", 10, 3)} END,
            CASE WHEN {outcome} < 995 THEN 5 + {_random("n", 11, 900)} END,
            CASE WHEN {_random("n", 12, 4)} = 0 THEN 64 * {_random("n", 13, 20)} ELSE 0 END,
            0, CASE WHEN {model} = 1 THEN {_random("n", 14, 400)} ELSE 0 END,
            250.0 * exp(3.2 * power({_random("n", 15, 100_000)} / 100000.0, 2)),
            CASE WHEN {_random("n", 16, 10)} < 3 THEN 40.0 + {_random("n", 17, 2000)} / 4.0 END,
            {_random("n", 16, 10)} < 3,
            success,
            CASE WHEN {outcome} >= 990 THEN 'rate_limit' WHEN {outcome} >= 985 THEN 'timeout'
                WHEN {outcome} >= 980 THEN 'server_error' END,
            CASE WHEN {outcome} >= 960 THEN 1 ELSE 0 END,
            CASE WHEN {outcome} >= 970 THEN 1 ELSE 0 END,
            request_hash, popular AND success AND n <> coalesce(oldest, n),
            CASE {_random("n", 18, 20)} WHEN 0 THEN true WHEN 1 THEN false END,
            '{{}}'
        FROM numbered LEFT JOIN oldest USING (request_hash)
    """


_REQUEST_HASHES_SQL = """
    INSERT INTO request_hashes (project_name, request_hash, calls)
    SELECT project_name, request_hash, count(*) FROM llm_calls
    WHERE success AND request_hash IS NOT NULL GROUP BY project_name, request_hash
"""

_SESSIONS_SQL = """
    INSERT INTO sessions (id, project_name, name, started_at, ended_at, status, metadata,
        call_count, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens,
        total_tokens, total_latency_ms, error_count, duration_ms)
    SELECT session_id, min(project_name), 'job', min(timestamp),
        max(timestamp) + make_interval(secs => max(latency_ms) / 1000.0),
        CASE WHEN bool_and(success) THEN 'ok' ELSE 'error' END, '{}', count(*),
        coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0),
        coalesce(sum(cached_tokens), 0), coalesce(sum(reasoning_tokens), 0),
        coalesce(sum(prompt_tokens + completion_tokens), 0), sum(latency_ms),
        count(*) - count(*) FILTER (WHERE success),
        extract(epoch FROM max(timestamp) - min(timestamp)) * 1000.0
    FROM llm_calls GROUP BY session_id
"""

_SPANS_SQL = f"""
    INSERT INTO agent_spans (id, session_id, parent_id, agent_name, operation, started_at,
        ended_at, success)
    SELECT 'e' || k || right(s.id, 30), s.id, NULL,
        {_case("(abs(hashtext(s.id)) + k) % 5", AGENTS[:5])},
        {_case("k % 5", OPERATIONS)},
        s.started_at + (s.ended_at - s.started_at) * (k - 1) / 3,
        s.started_at + (s.ended_at - s.started_at) * k / 3,
        s.status = 'ok'
    FROM sessions AS s, generate_series(1, 1 + abs(hashtext(s.id)) % 3) AS k
"""


def _bucket(value: str) -> str:
    """SQL of `histogram.bucket_of(value)`, with the same floating-point operations."""
    logarithm = f"ln(greatest({value}, {SMALLEST_MS!r}::float8))"  # greatest() skips NULL
    return f"CASE WHEN {value} IS NOT NULL THEN ceil({logarithm} / {math.log(GAMMA)!r}::float8) END"


def _histogram_entry(bucket: str, count: str) -> str:
    """Hex of one `histogram` entry: the bucket as little-endian int16, the count as uint32."""
    word = f"(({bucket})::int + 65536) % 65536"
    parts = [f"({word}) % 256", f"({word}) / 256"] + [
        f"(({count}) >> {shift}) % 256" for shift in (0, 8, 16, 24)
    ]
    return " || ".join(f"lpad(to_hex({part}), 2, '0')" for part in parts)


_KEYS = {
    "project_name": "project_name",
    "hour": "date_trunc('hour', timestamp AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
    "provider": "provider",
    "provider_name": "provider_name",
    "model": "coalesce(response_model, model)",
    "requested_model": "model",
    "agent_name": "coalesce(agent_name, '')",
    "operation": "coalesce(operation, '')",
    "success": "success",
    "error_type": "coalesce(error_type, '')",
    "tokens_known": "prompt_tokens IS NOT NULL AND completion_tokens IS NOT NULL",
    "long_prompt": f"coalesce(prompt_tokens, 0) >= {LONG_PROMPT_TOKENS}",
    "repeated": "repeated",
    "cache_hit": "CASE cache_hit WHEN true THEN 'hit' WHEN false THEN 'miss' ELSE '' END",
    "routed_from": "coalesce(routed_from, '')",
    "shadow_model": "coalesce(shadow_model, '')",
}
_KEY_LIST = ", ".join(_KEYS)
_JOINED = " AND ".join(f"s.{name} = {{other}}.{name}" for name in _KEYS)

_ROLLUPS_SQL = f"""
    INSERT INTO call_rollups ({_KEY_LIST}, calls, prompt_tokens, completion_tokens,
        cached_tokens, cache_creation_tokens, reasoning_tokens, latency_ms,
        largest_prompt_tokens, retries, rate_limited_retries, rate_limited_calls,
        first_token_calls, first_token_ms, latency_histogram, first_token_histogram)
    WITH facts AS MATERIALIZED (
        SELECT {", ".join(f"{sql} AS {name}" for name, sql in _KEYS.items())},
            prompt_tokens, completion_tokens, cached_tokens, cache_creation_tokens,
            reasoning_tokens, latency_ms, time_to_first_token_ms, retries,
            rate_limited_retries,
            (rate_limited_retries > 0 OR (NOT success AND error_type = 'rate_limit'))
                AS rate_limited,
            {_bucket("latency_ms")} AS latency_bucket,
            {_bucket("time_to_first_token_ms")} AS first_token_bucket
        FROM llm_calls
        WHERE timestamp >= date_trunc('hour', now()) - make_interval(days => {{later}})
            AND timestamp < date_trunc('hour', now()) - make_interval(days => {{earlier}})
    ),
    sums AS (
        SELECT {_KEY_LIST}, count(*) AS calls, coalesce(sum(prompt_tokens), 0) AS prompt,
            coalesce(sum(completion_tokens), 0) AS completion,
            coalesce(sum(cached_tokens), 0) AS cached,
            coalesce(sum(cache_creation_tokens), 0) AS written,
            coalesce(sum(reasoning_tokens), 0) AS reasoning, sum(latency_ms) AS latency,
            coalesce(max(prompt_tokens), 0) AS largest, sum(retries) AS retries,
            sum(rate_limited_retries) AS rate_limited_retries,
            count(*) FILTER (WHERE rate_limited) AS rate_limited_calls,
            count(time_to_first_token_ms) AS first_token_calls,
            coalesce(sum(time_to_first_token_ms), 0) AS first_token_ms
        FROM facts GROUP BY {_KEY_LIST}
    ),
    latency AS (
        SELECT {_KEY_LIST}, decode(string_agg({_histogram_entry("latency_bucket", "calls")},
            '' ORDER BY latency_bucket), 'hex') AS histogram
        FROM (SELECT {_KEY_LIST}, latency_bucket, count(*) AS calls FROM facts
            GROUP BY {_KEY_LIST}, latency_bucket) AS counted
        GROUP BY {_KEY_LIST}
    ),
    first_token AS (
        SELECT {_KEY_LIST}, decode(string_agg(
            {_histogram_entry("first_token_bucket", "calls")},
            '' ORDER BY first_token_bucket), 'hex') AS histogram
        FROM (SELECT {_KEY_LIST}, first_token_bucket, count(*) AS calls FROM facts
            WHERE first_token_bucket IS NOT NULL
            GROUP BY {_KEY_LIST}, first_token_bucket) AS counted
        GROUP BY {_KEY_LIST}
    )
    SELECT {", ".join(f"s.{name}" for name in _KEYS)}, s.calls, s.prompt, s.completion,
        s.cached, s.written, s.reasoning, s.latency, s.largest, s.retries,
        s.rate_limited_retries, s.rate_limited_calls, s.first_token_calls, s.first_token_ms,
        l.histogram, coalesce(f.histogram, '\\x'::bytea)
    FROM sums AS s
    JOIN latency AS l ON {_JOINED.format(other="l")}
    LEFT JOIN first_token AS f ON {_JOINED.format(other="f")}
"""


def _count(connection: sqlalchemy.Connection, sql: str) -> int:
    return int(connection.execute(sqlalchemy.text(sql)).scalar_one())


def seed(url: str, calls: int, days: float, other_calls: int | None = None) -> Seeded:
    """Fill the (empty) store at `url` with `calls` calls of project `PROJECT` and
    `other_calls` (a tenth as many if None) shared by `OTHER_PROJECTS`, over `days` days, then
    everything obsdeco derives from them. Prints each step's time."""
    other_calls = calls // 10 if other_calls is None else other_calls
    engine = sqlalchemy.create_engine(url)
    prepare_schema(engine)
    seconds: dict[str, float] = {}
    pool = max(100, int(calls * POPULAR_SHARE / 20))

    def step(name: str, *statements: str) -> None:
        started = time.perf_counter()
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("SET LOCAL work_mem = '256MB'"))
            for statement in statements:
                connection.execute(sqlalchemy.text(statement))
        seconds[name] = time.perf_counter() - started
        print(f"  {name}: {seconds[name]:.1f} s", flush=True)

    share = other_calls // len(OTHER_PROJECTS)
    projects = [(PROJECT, calls)] + [(name, share) for name in OTHER_PROJECTS]
    inserts, first = [], 0
    for name, rows in projects:
        if rows:
            inserts.append(_calls_sql(name, first, rows, days, pool))
        first += -(-rows // CALLS_PER_SESSION) * CALLS_PER_SESSION  # no session spans two
    with engine.begin() as connection:
        now = datetime.now(UTC)
        partitions.create_days(connection, (now - timedelta(days=days + 1)).date(), now.date())
    step("calls", *inserts)
    step("repeat counts", _REQUEST_HASHES_SQL)
    step("sessions and spans", _SESSIONS_SQL, _SPANS_SQL)
    # A day at a time: each day's calls are grouped in memory, all of them at once would spill
    # the sorts to disk over and over.
    step(
        "rollups",
        *(_ROLLUPS_SQL.format(earlier=day - 1, later=day) for day in range(0, math.ceil(days) + 2)),
    )
    started = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(
            sqlalchemy.text(
                "VACUUM ANALYZE llm_calls, sessions, agent_spans, call_rollups, request_hashes"
            )
        )
        counts = [
            _count(connection, f"SELECT count(*) FROM {table}")
            for table in ("llm_calls", "sessions", "agent_spans", "call_rollups")
        ]
        project_calls = _count(
            connection, f"SELECT count(*) FROM llm_calls WHERE project_name = '{PROJECT}'"
        )
    seconds["vacuum analyze"] = time.perf_counter() - started
    print(f"  vacuum analyze: {seconds['vacuum analyze']:.1f} s", flush=True)
    engine.dispose()
    return Seeded(counts[0], project_calls, counts[1], counts[2], counts[3], seconds)


def _snapshot(connection: sqlalchemy.Connection) -> tuple[object, ...]:
    """Rollups (histograms as bucket counts), repeat counts and repeat flags, comparable."""
    rolled = connection.execute(
        sqlalchemy.select(call_rollups).order_by(*call_rollups.primary_key.columns)
    ).all()
    rows = []
    for row in rolled:
        values = row._asdict()
        for name in ("latency_histogram", "first_token_histogram"):
            values[name] = _bucket_counts(values[name])
        values["latency_ms"] = round(values["latency_ms"], 3)  # sums in another order
        values["first_token_ms"] = round(values["first_token_ms"], 3)
        rows.append(values)
    hashes = connection.execute(
        sqlalchemy.select(request_hashes).order_by(*request_hashes.primary_key.columns)
    ).all()
    repeated = connection.execute(
        sqlalchemy.select(llm_calls.c.id).where(llm_calls.c.repeated).order_by(llm_calls.c.id)
    ).all()
    return rows, [tuple(row) for row in hashes], [row.id for row in repeated]


def _bucket_counts(encoded: bytes) -> dict[int, int]:
    counts: dict[int, int] = {}
    for start in range(0, len(encoded), 6):
        bucket = int.from_bytes(encoded[start : start + 2], "little", signed=True)
        counts[bucket] = int.from_bytes(encoded[start + 2 : start + 6], "little")
    return counts


def check_against_rebuild(url: str, calls: int = 20_000) -> None:
    """Seed a small store, then let obsdeco rebuild its repeats and rollups from the calls:
    an AssertionError unless both are identical (histograms bucket for bucket)."""
    seed(url, calls, days=3)
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as connection:
        seeded = _snapshot(connection)
    storage = SQLAlchemyStorage(url)
    storage.rebuild_rollups()
    storage.close()
    with engine.connect() as connection:
        rebuilt = _snapshot(connection)
    engine.dispose()
    for part, ours, theirs in zip(
        ("rollups", "request hashes", "repeats"), seeded, rebuilt, strict=True
    ):
        assert ours == theirs, f"the SQL seeding's {part} differ from rebuild_rollups()'s"
