"""The columns of each export, in their fixed order, with their types and meanings.

The README's "Export to files" tables list the same columns; new columns are only ever added
at the end, so that readers that index columns by position keep working.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ColumnKind = Literal["string", "integer", "float", "boolean", "timestamp", "json"]
"""How a column is written. "timestamp" is UTC: ISO 8601 text with microseconds and
"+00:00" in JSON Lines and CSV, timestamp[us, UTC] in Parquet. "json" is an object: nested in
JSON Lines, compact JSON text in CSV and Parquet."""

TEXT_KINDS: frozenset[ColumnKind] = frozenset({"string", "json"})
"""Columns holding text in CSV (the ones a spreadsheet could take for a formula)."""


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: ColumnKind
    meaning: str


CALL_COLUMNS: tuple[Column, ...] = (
    Column("id", "string", "the call's id (32 hex digits, time-ordered)"),
    Column("session_id", "string", "the session it was made in"),
    Column("project_name", "string", "its project"),
    Column("timestamp", "timestamp", "when the call started"),
    Column("provider", "string", "the API format: openai, anthropic, google or other"),
    Column("provider_name", "string", "the service that answered (openai, groq, gcp.gemini, ...)"),
    Column("model", "string", "the model called (the router's choice when it changed it)"),
    Column("response_model", "string", "the model the provider said answered"),
    Column("api", "string", "the SDK endpoint, e.g. chat.completions, messages"),
    Column("agent_name", "string", "the innermost agent active when the call was made"),
    Column("operation", "string", "the agent's operation"),
    Column("prompt_tokens", "integer", "all input tokens, cached ones included; empty: unknown"),
    Column("completion_tokens", "integer", "all output tokens, reasoning included; empty: unknown"),
    Column("cached_tokens", "integer", "the cache-read part of prompt_tokens"),
    Column("cache_creation_tokens", "integer", "the cache-write part of prompt_tokens"),
    Column("reasoning_tokens", "integer", "the reasoning part of completion_tokens"),
    Column("latency_ms", "float", "the call's duration"),
    Column("time_to_first_token_ms", "float", "streams: until the first token"),
    Column("streamed", "boolean", "whether the answer was streamed"),
    Column("success", "boolean", "false when the call failed"),
    Column("error_type", "string", "why it failed (rate_limit, timeout, an exception's name...)"),
    Column("error_message", "string", "the error's message, secrets and PII scrubbed"),
    Column("finish_reason", "string", "why the answer ended (stop, length, tool_calls, ...)"),
    Column("tool_call_count", "integer", "tool calls in the answer"),
    Column("retries", "integer", "attempts the SDK retried within the call"),
    Column("rate_limited_retries", "integer", "how many of those retries followed a 429"),
    Column("cost_usd", "float", "USD paid, priced at export time; empty: the model has no price"),
    Column("request_hash", "string", "a hash of the normalised request"),
    Column("cache_hit", "boolean", "true: answered by obsdeco's cache; empty: outside cache()"),
    Column("saved_usd", "float", "USD the cache or the router saved; empty for other calls"),
    Column("requested_model", "string", "the model the code asked for, when the router changed it"),
    Column("routed_from", "string", "the from_model of the route rule that changed it"),
    Column("shadow_model", "string", "the model a shadow route rule would have called"),
    Column("experiments", "json", "the session's experiment assignments: experiment -> variant"),
    Column("metadata", "json", "the call's metadata"),
    Column("prompt", "string", "the request's messages as JSON (only with capture_content)"),
    Column("completion", "string", "the answer as JSON (only with capture_content)"),
)
"""`LLMCall`'s fields, in its order: a JSON Lines row validates as an `LLMCall`."""

SESSION_COLUMNS: tuple[Column, ...] = (
    Column("id", "string", "the session's id"),
    Column("project_name", "string", "its project"),
    Column("name", "string", "its name (the decorated function's, or the one given)"),
    Column("parent_id", "string", "the session it was started inside"),
    Column("started_at", "timestamp", "when it started"),
    Column("ended_at", "timestamp", "when it ended; empty while running"),
    Column("duration_ms", "float", "its wall time; empty while running"),
    Column("status", "string", "running, ok or error"),
    Column("error_type", "string", "the exception that ended it"),
    Column("error_message", "string", "that exception's message, scrubbed"),
    Column("calls", "integer", "LLM calls made in it"),
    Column("errors", "integer", "of which failed"),
    Column("prompt_tokens", "integer", "summed over its calls (unknown counts add nothing)"),
    Column("completion_tokens", "integer", "summed over its calls"),
    Column("cached_tokens", "integer", "summed over its calls"),
    Column("reasoning_tokens", "integer", "summed over its calls"),
    Column("total_tokens", "integer", "prompt_tokens + completion_tokens"),
    Column("cost_usd", "float", "USD, priced when the session ended; empty: none priced"),
    Column("total_latency_ms", "float", "its calls' latencies summed"),
    Column("experiments", "json", "its experiment assignments: experiment -> variant"),
    Column("metadata", "json", "the session's metadata"),
)
"""The aggregates (calls to total_latency_ms) are the ones stored when the session ended: empty
for a session still running and for the implicit per-day sessions, which never end."""

SPAN_COLUMNS: tuple[Column, ...] = (
    Column("id", "string", "the span's id"),
    Column("session_id", "string", "the session it ran in"),
    Column("project_name", "string", "that session's project"),
    Column("parent_id", "string", "the span of the agent that invoked it"),
    Column("agent_name", "string", "the agent"),
    Column("operation", "string", "its operation"),
    Column("started_at", "timestamp", "when the invocation started"),
    Column("ended_at", "timestamp", "when it returned"),
    Column("duration_ms", "float", "its wall time"),
    Column("success", "boolean", "false when it raised"),
    Column("error_type", "string", "the exception it raised"),
)

SCORE_COLUMNS: tuple[Column, ...] = (
    Column("id", "string", "the score's id"),
    Column("target_id", "string", "what was scored: a session's id or a call's"),
    Column("session_id", "string", "the session scored, or the scored call's"),
    Column("call_id", "string", "the call scored; empty for a session score"),
    Column("project_name", "string", "its project"),
    Column("name", "string", 'what the score measures, e.g. "helpful"'),
    Column("value", "float", "the score, from 0 to 1 (a bool as 0 or 1)"),
    Column("comment", "string", "the comment given with it"),
    Column("created_at", "timestamp", "when it was given"),
    Column("model", "string", "the scored call's model, as reports name it"),
    Column("agent_name", "string", "the scored call's agent"),
    Column("experiments", "json", "the target's experiment assignments: experiment -> variant"),
)
