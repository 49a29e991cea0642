"""A local HTTP server that answers like the OpenAI, Anthropic and Gemini APIs, for tests.

The server uses only the standard library. It listens on 127.0.0.1 on a free port, records every
request it receives, and answers each one with the next scripted `Reply` queued for it, or with a
response synthesised from the request when nothing is queued:

    with ProviderServer() as provider:
        provider.enqueue(Reply.fixture("openai/chat_completion.json"))
        client = openai.OpenAI(base_url=provider.openai_base_url, api_key="test")
        completion = client.chat.completions.create(model="gpt-4o", messages=[...])
        assert provider.requests[0].body["model"] == "gpt-4o"

Endpoints: ``POST /v1/chat/completions``, ``/v1/completions`` (legacy), ``/v1/responses`` and
``/v1/embeddings`` (OpenAI), ``POST /v1/messages`` (Anthropic, also with ``?beta=true``) and
``POST /{version}/models/{model}:generateContent`` and ``:streamGenerateContent`` (Gemini, with
``?alt=sse`` a stream, else a JSON array of chunks). Streams are sent as
``text/event-stream`` with chunked transfer encoding, one HTTP chunk per event, each written as
soon as it is due, so clients see them arrive over time.

Recorded responses (the fixtures) ship with obsdeco in ``obsdeco/testing/fixtures`` (their
sources in its ``SOURCES.md``); the ``OBSDECO_FIXTURES`` environment variable names another
folder. They are read when a reply names them, not before, and replayed byte for byte.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import hashlib
import http
import json
import math
import os
import random
import re
import selectors
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "DEFAULT_TEXT",
    "FIXTURES_ENV",
    "ProviderServer",
    "RecordedRequest",
    "Reply",
    "Responder",
    "SSEEvent",
    "count_request_tokens",
    "count_tokens",
    "fixture_path",
    "fixture_request",
    "fixtures_dir",
    "load_fixture",
    "split_sse",
]

FIXTURES_ENV: Final = "OBSDECO_FIXTURES"
"""Environment variable naming another fixtures folder (else the ones shipped with obsdeco)."""

DEFAULT_TEXT: Final = "Hello! This is a reply from the obsdeco test provider."
"""The assistant text of synthesised replies, unless the server or the reply says otherwise."""

_OPENAI_CHAT: Final = "/v1/chat/completions"
_OPENAI_COMPLETIONS: Final = "/v1/completions"
_OPENAI_RESPONSES: Final = "/v1/responses"
_OPENAI_EMBEDDINGS: Final = "/v1/embeddings"
_ANTHROPIC_MESSAGES: Final = "/v1/messages"
_ENDPOINTS: Final = frozenset(
    {_OPENAI_CHAT, _OPENAI_COMPLETIONS, _OPENAI_RESPONSES, _OPENAI_EMBEDDINGS, _ANTHROPIC_MESSAGES}
)
_GEMINI_PATH: Final = re.compile(
    r"/(?P<version>v[^/]+)/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent)"
)
"""Gemini's generate endpoints under any API version (``v1``, ``v1beta``, ...)."""

_SSE_CONTENT_TYPE: Final = "text/event-stream; charset=utf-8"
_JSON_CONTENT_TYPE: Final = "application/json"


# --------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------

_TOKEN_RE: Final = re.compile(r"\w+|[^\w\s]")
_PIECE_RE: Final = re.compile(r"\s*(?:\w+|[^\w\s])")
_TEXT_KEYS: Final = frozenset({"content", "text", "input", "instructions", "system", "prompt"})


def count_tokens(text: str) -> int:
    """Count the tokens of ``text`` the way the server does: words and punctuation marks.

    Each run of word characters is one token and so is each other non-space character. It is a
    deterministic stand-in for a real tokenizer, so tests can predict usage numbers.
    """
    return len(_TOKEN_RE.findall(text))


def _pieces(text: str) -> list[str]:
    """Split ``text`` into stream deltas, one token each, whitespace kept with the next token."""
    pieces = _PIECE_RE.findall(text)
    rest = text[sum(len(piece) for piece in pieces) :]
    if rest:
        if pieces:
            pieces[-1] += rest
        else:
            pieces.append(rest)
    return pieces


def _collect_text(value: Any, in_text: bool, out: list[str]) -> None:
    if isinstance(value, str):
        if in_text:
            out.append(value)
    elif isinstance(value, list):
        for item in value:
            _collect_text(item, in_text, out)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _collect_text(item, key in _TEXT_KEYS, out)


def count_request_tokens(body: Any) -> int:
    """Count the prompt tokens the server reports for a request body.

    The count is `count_tokens` summed over every string found under a ``content``, ``text``,
    ``input``, ``instructions``, ``system`` or ``prompt`` key anywhere in the body (messages,
    content parts, Responses input items, the Anthropic system prompt, embedding inputs, legacy
    completion prompts). Token-id arrays given as embedding input or completion prompt count one
    token per id.
    """
    if isinstance(body, Mapping):
        raw = body.get("input", body.get("prompt"))
        if isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
            return len(raw)
        if isinstance(raw, list) and raw and all(isinstance(x, list) for x in raw):
            return sum(len(x) for x in raw)
    texts: list[str] = []
    _collect_text(body, False, texts)
    return sum(count_tokens(text) for text in texts)


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


def fixtures_dir() -> Path:
    """The fixtures folder: ``$OBSDECO_FIXTURES`` if set, else the one shipped with obsdeco."""
    configured = os.environ.get(FIXTURES_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parent / "fixtures"


def fixture_path(name: str) -> Path:
    """The file of fixture ``name``, e.g. ``"openai/chat_completion.json"``.

    The extension may be left out (``"anthropic/messages_stream"``): ``.json`` then ``.sse`` are
    tried. Raises `FileNotFoundError` naming the folder searched.
    """
    base = fixtures_dir()
    candidate = base / name
    if candidate.is_file():
        return candidate
    for extension in (".json", ".sse"):
        alternative = base / f"{name}{extension}"
        if alternative.is_file():
            return alternative
    raise FileNotFoundError(
        f"no fixture {name!r} in {base} (set {FIXTURES_ENV} to the fixtures folder)"
    )


@functools.lru_cache(maxsize=256)
def _read(path: Path) -> bytes:
    return path.read_bytes()


def load_fixture(name: str) -> bytes:
    """The raw bytes of fixture ``name`` (read once, then cached)."""
    return _read(fixture_path(name))


def fixture_request(name: str) -> Any:
    """The parsed request body recorded with fixture ``name`` (its ``*.request.json``)."""
    path = fixture_path(name)
    stem = path.name.removesuffix(path.suffix)
    if not stem.endswith(".request"):
        stem = f"{stem}.request"
    return json.loads(_read(path.with_name(f"{stem}.json")))


@functools.lru_cache(maxsize=8)
def _index(base: Path) -> dict[str, tuple[int, str]]:
    """``response_file -> (status, content_type)`` from the fixtures' ``index.json``."""
    try:
        entries = json.loads((base / "index.json").read_bytes())
    except (OSError, ValueError):
        return {}
    index: dict[str, tuple[int, str]] = {}
    if isinstance(entries, list):
        for entry in entries:
            if isinstance(entry, dict) and isinstance(entry.get("response_file"), str):
                status = entry.get("status")
                content_type = entry.get("content_type")
                index[entry["response_file"]] = (
                    status if isinstance(status, int) else 200,
                    content_type if isinstance(content_type, str) else "",
                )
    return index


_SSE_BOUNDARY: Final = re.compile(rb"(?:\r\n\r\n|\n\n|\r\r)[\r\n]*")


def split_sse(data: bytes) -> tuple[bytes, ...]:
    """Split an SSE body into its events, each with its terminating blank line.

    Extra blank lines stay with the event before them, so ``b"".join(split_sse(data)) == data``.
    """
    frames: list[bytes] = []
    start = 0
    for match in _SSE_BOUNDARY.finditer(data):
        frames.append(data[start : match.end()])
        start = match.end()
    if start < len(data):
        frames.append(data[start:])
    return tuple(frames)


# --------------------------------------------------------------------------------------------
# Requests and replies
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the server received it."""

    method: str
    """HTTP method, e.g. ``"POST"``."""
    path: str
    """URL path without the query, e.g. ``"/v1/messages"``."""
    query: Mapping[str, str]
    """Query parameters (the last value of a repeated name), e.g. ``{"beta": "true"}``."""
    headers: Mapping[str, str]
    """Request headers, names lower-cased; repeated headers joined with ``", "``."""
    body: Any
    """The JSON body parsed, or ``None`` when the body is empty or not JSON."""
    raw_body: bytes
    """The body exactly as received."""
    request_id: str
    """The id the server sent back in the ``x-request-id`` and ``request-id`` headers."""
    received_at: float
    """`time.monotonic` when the request had been read."""

    @property
    def stream(self) -> bool:
        """Whether the request asked for a stream (``"stream": true``, or Gemini's
        ``:streamGenerateContent``)."""
        gemini = _GEMINI_PATH.fullmatch(self.path)
        if gemini is not None:
            return gemini["method"] == "streamGenerateContent"
        return isinstance(self.body, Mapping) and self.body.get("stream") is True

    @property
    def model(self) -> str | None:
        """The requested ``model`` (for Gemini, the one in the path), if any."""
        gemini = _GEMINI_PATH.fullmatch(self.path)
        if gemini is not None:
            return gemini["model"]
        model = self.body.get("model") if isinstance(self.body, Mapping) else None
        return model if isinstance(model, str) else None

    @property
    def is_gemini(self) -> bool:
        """Whether the request is for the Gemini API (its path or API key header says so)."""
        return _GEMINI_PATH.fullmatch(self.path) is not None or "x-goog-api-key" in self.headers

    @property
    def is_anthropic(self) -> bool:
        """Whether the request is for the Anthropic API (path or headers say so)."""
        return (
            self.path.startswith(_ANTHROPIC_MESSAGES)
            or "anthropic-version" in self.headers
            or "x-api-key" in self.headers
        )


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One server-sent event, for `Reply.sse`.

    ``data`` is sent as it is when a string, else JSON-encoded; a multi-line string becomes
    several ``data:`` lines.
    """

    data: Any
    event: str | None = None
    id: str | None = None
    retry: int | None = None

    def encode(self) -> bytes:
        """The event in wire form, ending with its blank line."""
        lines: list[str] = []
        if self.event is not None:
            lines.append(f"event: {self.event}")
        if self.id is not None:
            lines.append(f"id: {self.id}")
        if self.retry is not None:
            lines.append(f"retry: {self.retry}")
        payload = self.data if isinstance(self.data, str) else _dumps(self.data)
        lines.extend(f"data: {line}" for line in payload.split("\n"))
        return ("\n".join(lines) + "\n\n").encode()


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _frame(data: Any, event: str | None = None) -> bytes:
    return SSEEvent(data, event).encode()


SSEInput = SSEEvent | Mapping[str, Any] | str | bytes | tuple[str, Any]
"""What `Reply.sse` accepts as one event: an `SSEEvent`; a mapping (a JSON ``data:`` line); a
string (a ``data:`` line as is, e.g. ``"[DONE]"``); bytes (a frame sent verbatim); or an
``(event_name, data)`` pair."""

_Dynamic = Callable[["Reply", RecordedRequest, "ProviderServer"], "Reply"]


@dataclass(frozen=True)
class Reply:
    """What the server answers to one request. Build one with the class methods.

    Every reply takes these options:

    - ``headers``: extra response headers.
    - ``delay``: seconds to wait before the status line and headers (latency tests).
    - ``event_delay``: seconds to wait between two SSE events (time-to-first-token tests).
    - ``drop_after``: drop the connection (no clean end) after this many SSE events, or, for a
      plain body, after this many bytes of it; ``0`` drops right after the headers.
    - ``hold`` and ``hold_after``: wait until the `threading.Event` ``hold`` is set, before the
      headers (``hold_after=None``) or after ``hold_after`` SSE events. This lets a test see
      the first events arrive while the rest are held back, without sleeping.

    Any field can be changed on a copy with `dataclasses.replace`.
    """

    status: int = 200
    body: bytes | None = None
    """A whole body (sent with Content-Length); ``None`` for a stream."""
    events: tuple[bytes, ...] | None = None
    """Encoded SSE events, sent one chunk each; ``None`` for a plain body."""
    content_type: str = _JSON_CONTENT_TYPE
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    event_delay: float = 0.0
    drop_after: int | None = None
    hold: threading.Event | None = None
    hold_after: int | None = None
    no_response: bool = False
    """Close the connection without answering at all (after ``delay``/``hold``)."""
    label: str = ""
    """A description for error messages and reprs (e.g. the fixture name)."""
    dynamic: _Dynamic | None = field(default=None, repr=False, compare=False)
    """Internal: builds the body from the request at serve time (`default`, `error`)."""

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status code, got {self.status}")
        if self.delay < 0 or self.event_delay < 0:
            raise ValueError("delay and event_delay must be >= 0")
        if self.drop_after is not None and self.drop_after < 0:
            raise ValueError("drop_after must be >= 0")
        if self.hold_after is not None and (self.hold is None or self.hold_after < 0):
            raise ValueError("hold_after needs a hold event and must be >= 0")

    # -- constructors ----------------------------------------------------------------------

    @classmethod
    def fixture(
        cls,
        name: str,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        event_delay: float = 0.0,
        drop_after: int | None = None,
        hold: threading.Event | None = None,
        hold_after: int | None = None,
    ) -> Reply:
        """Replay recorded fixture ``name`` (e.g. ``"openai/chat_completion.json"``) byte for byte.

        The status and content type come from the fixtures' ``index.json`` (so an error fixture
        answers with its recorded status) unless ``status`` is given. ``.sse`` fixtures are sent
        as a stream, one chunk per recorded event. The file is read now, so a wrong name fails
        in the test rather than in the server.
        """
        path = fixture_path(name)
        data = _read(path)
        base = fixtures_dir()
        try:
            relative = path.relative_to(base).as_posix()
        except ValueError:
            relative = path.name
        recorded_status, recorded_type = _index(base).get(relative, (200, ""))
        streaming = path.suffix == ".sse"
        content_type = recorded_type or (_SSE_CONTENT_TYPE if streaming else _JSON_CONTENT_TYPE)
        return cls(
            status=recorded_status if status is None else status,
            body=None if streaming else data,
            events=split_sse(data) if streaming else None,
            content_type=content_type,
            headers=_header_pairs(headers),
            delay=delay,
            event_delay=event_delay,
            drop_after=drop_after,
            hold=hold,
            hold_after=hold_after,
            label=f"fixture {relative}",
        )

    @classmethod
    def json(
        cls,
        body: Any,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        drop_after: int | None = None,
        hold: threading.Event | None = None,
    ) -> Reply:
        """Answer with ``body`` encoded as JSON."""
        return cls(
            status=status,
            body=json.dumps(body).encode(),
            headers=_header_pairs(headers),
            delay=delay,
            drop_after=drop_after,
            hold=hold,
            label="json",
        )

    @classmethod
    def raw(
        cls,
        body: bytes | str,
        *,
        status: int = 200,
        content_type: str = "text/plain; charset=utf-8",
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        drop_after: int | None = None,
        hold: threading.Event | None = None,
    ) -> Reply:
        """Answer with ``body`` as it is (e.g. an HTML error page from a proxy)."""
        return cls(
            status=status,
            body=body.encode() if isinstance(body, str) else bytes(body),
            content_type=content_type,
            headers=_header_pairs(headers),
            delay=delay,
            drop_after=drop_after,
            hold=hold,
            label="raw",
        )

    @classmethod
    def sse(
        cls,
        events: Iterable[SSEInput],
        *,
        name_events: bool = False,
        done: bool = False,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        event_delay: float = 0.0,
        drop_after: int | None = None,
        hold: threading.Event | None = None,
        hold_after: int | None = None,
    ) -> Reply:
        """Answer with a ``text/event-stream`` of ``events`` (see `SSEInput` for the forms).

        ``name_events=True`` sends a mapping that has a ``"type"`` key with an
        ``event: <type>`` line, the framing of the Anthropic and Responses APIs (the Anthropic
        SDK ignores events without a name). ``done=True`` appends ``data: [DONE]`` as OpenAI's
        chat completions stream does.
        """
        frames: list[bytes] = []
        for item in events:
            if isinstance(item, SSEEvent):
                frames.append(item.encode())
            elif isinstance(item, bytes):
                frames.append(item)
            elif isinstance(item, str):
                frames.append(_frame(item))
            elif isinstance(item, tuple):
                name, data = item
                frames.append(_frame(data, name))
            else:
                kind = item.get("type") if name_events else None
                frames.append(_frame(dict(item), kind if isinstance(kind, str) else None))
        if done:
            frames.append(_frame("[DONE]"))
        return cls(
            status=status,
            events=tuple(frames),
            content_type=_SSE_CONTENT_TYPE,
            headers=_header_pairs(headers),
            delay=delay,
            event_delay=event_delay,
            drop_after=drop_after,
            hold=hold,
            hold_after=hold_after,
            label="sse",
        )

    @classmethod
    def error(
        cls,
        status: int = 500,
        body: Mapping[str, Any] | str | bytes | None = None,
        *,
        message: str | None = None,
        error_type: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        hold: threading.Event | None = None,
    ) -> Reply:
        """Answer with an HTTP error.

        ``body`` is sent as given (a mapping as JSON). Without it the server writes the error
        envelope of the API the request was for: OpenAI's
        ``{"error": {"message", "type", "param", "code"}}``, Anthropic's
        ``{"type": "error", "error": {"type", "message"}, "request_id"}`` or Gemini's
        ``{"error": {"code", "message", "status"}}`` (``error_type`` is the status there), with
        ``message``, ``error_type`` and ``code`` or defaults for the status. E.g.
        ``Reply.error(429, headers={"retry-after": "0"})``.
        """
        if not 400 <= status <= 599:
            raise ValueError(f"an error status is 400-599, got {status}")
        dynamic: _Dynamic | None = None
        encoded: bytes | None
        if body is None:
            encoded = None
            dynamic = functools.partial(
                _render_error, message=message, error_type=error_type, code=code
            )
        elif isinstance(body, bytes):
            encoded = body
        elif isinstance(body, str):
            encoded = body.encode()
        else:
            encoded = json.dumps(body).encode()
        return cls(
            status=status,
            body=encoded,
            headers=_header_pairs(headers),
            delay=delay,
            hold=hold,
            label=f"error {status}",
            dynamic=dynamic,
        )

    @classmethod
    def default(
        cls,
        text: str | None = None,
        *,
        model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        usage: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        event_delay: float = 0.0,
        drop_after: int | None = None,
        hold: threading.Event | None = None,
        hold_after: int | None = None,
    ) -> Reply:
        """Answer with a response synthesised from the request, as when nothing is queued.

        The reply has the real API's shape for the endpoint (a stream if the request asked for
        one) and echoes the requested model. ``text`` replaces the assistant text; ``model``
        the model reported; ``input_tokens`` / ``output_tokens`` the prompt and completion
        counts (totals follow); ``usage`` is merged last, key by key, into the usage object
        (e.g. ``{"prompt_tokens_details": {"cached_tokens": 5}}`` for OpenAI chat or
        ``{"cache_read_input_tokens": 5}`` for Anthropic, ``{"thoughtsTokenCount": 7}`` for
        Gemini, where it goes into every chunk of a stream).
        """
        spec = _Synthesis(
            text=text,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            usage=dict(usage) if usage is not None else None,
        )
        return cls(
            headers=_header_pairs(headers),
            delay=delay,
            event_delay=event_delay,
            drop_after=drop_after,
            hold=hold,
            hold_after=hold_after,
            label="default",
            dynamic=functools.partial(_synthesize, spec=spec),
        )

    @classmethod
    def disconnect(cls, *, delay: float = 0.0, hold: threading.Event | None = None) -> Reply:
        """Close the connection without sending any response (clients see a connection error)."""
        return cls(no_response=True, delay=delay, hold=hold, label="disconnect")


def _header_pairs(headers: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in (headers or {}).items())


Responder = Callable[[RecordedRequest], Reply]
"""A function that picks the reply for a request; it may be queued instead of a `Reply`."""


# --------------------------------------------------------------------------------------------
# Synthesised replies
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Synthesis:
    text: str | None = None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    usage: dict[str, Any] | None = None


def _merge(base: dict[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    merged = dict(base)
    for key, value in (extra or {}).items():
        current = merged.get(key)
        if isinstance(value, Mapping) and isinstance(current, dict):
            merged[key] = _merge(current, value)
        else:
            merged[key] = value
    return merged


_OPENAI_ERRORS: Final[dict[int, tuple[str, str | None, str]]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("permission_error", None, "You are not allowed to make this request."),
    404: ("invalid_request_error", None, "The requested resource does not exist."),
    409: ("invalid_request_error", None, "The request conflicts with another request."),
    422: ("invalid_request_error", None, "The request could not be processed."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}

_ANTHROPIC_ERRORS: Final[dict[int, tuple[str, str]]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    404: ("not_found_error", "Not found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Rate limit exceeded."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}


_GEMINI_ERRORS: Final[dict[int, tuple[str, str]]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "API key not valid. Please pass a valid API key."),
    403: ("PERMISSION_DENIED", "The caller does not have permission."),
    404: ("NOT_FOUND", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: ("INTERNAL", "An internal error has occurred."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}


def _error_payload(
    request: RecordedRequest,
    status: int,
    message: str | None,
    error_type: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    if request.is_gemini:
        fallback_status = "INTERNAL" if status >= 500 else "INVALID_ARGUMENT"
        gemini_status, gemini_message = _GEMINI_ERRORS.get(
            status, (fallback_status, _status_phrase(status))
        )
        return {
            "error": {
                "code": status,
                "message": message or gemini_message,
                "status": error_type or gemini_status,
            }
        }
    if request.is_anthropic:
        fallback_type = "api_error" if status >= 500 else "invalid_request_error"
        default_type, default_message = _ANTHROPIC_ERRORS.get(
            status, (fallback_type, _status_phrase(status))
        )
        return {
            "type": "error",
            "error": {"type": error_type or default_type, "message": message or default_message},
            "request_id": request.request_id,
        }
    fallback_type = "server_error" if status >= 500 else "invalid_request_error"
    openai_type, openai_code, openai_message = _OPENAI_ERRORS.get(
        status, (fallback_type, None, _status_phrase(status))
    )
    return {
        "error": {
            "message": message or openai_message,
            "type": error_type or openai_type,
            "param": None,
            "code": code if code is not None else openai_code,
        }
    }


def _status_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _render_error(
    reply: Reply,
    request: RecordedRequest,
    provider: ProviderServer,
    *,
    message: str | None,
    error_type: str | None,
    code: str | None,
) -> Reply:
    del provider
    payload = _error_payload(request, reply.status, message, error_type, code)
    return dataclasses.replace(reply, body=json.dumps(payload).encode(), dynamic=None)


def _fail(
    reply: Reply, request: RecordedRequest, status: int, message: str, param: str | None = None
) -> Reply:
    payload = _error_payload(request, status, message)
    if param is not None and "param" in payload.get("error", {}):
        payload["error"]["param"] = param
    return dataclasses.replace(
        reply,
        status=status,
        body=json.dumps(payload).encode(),
        events=None,
        content_type=_JSON_CONTENT_TYPE,
        dynamic=None,
    )


def _synthesize(
    reply: Reply, request: RecordedRequest, provider: ProviderServer, *, spec: _Synthesis
) -> Reply:
    path = request.path.rstrip("/") or "/"
    if request.method == "POST" and _GEMINI_PATH.fullmatch(path):
        return _synthesize_gemini(reply, request, provider, spec)
    if request.method != "POST" or path not in _ENDPOINTS:
        return _fail(reply, request, 404, f"Invalid URL ({request.method} {request.path})")
    body = request.body
    if not isinstance(body, Mapping):
        return _fail(reply, request, 400, "We could not parse the JSON body of your request.")
    model = spec.model or body.get("model")
    if not isinstance(model, str) or not model:
        return _fail(reply, request, 400, "You must provide a model parameter.", "model")
    if path == _ANTHROPIC_MESSAGES and not isinstance(body.get("max_tokens"), int):
        return _fail(reply, request, 400, "max_tokens: Field required")
    synth = _Synthesizer(provider, request, body, model, spec)
    if path == _OPENAI_EMBEDDINGS:
        if not isinstance(body.get("input"), str | list):
            return _fail(reply, request, 400, "'input' is a required property", "input")
        return synth.finish(reply, synth.embeddings(), None)
    if path == _OPENAI_CHAT:
        if request.stream:
            return synth.finish(reply, None, synth.chat_stream())
        return synth.finish(reply, synth.chat(), None)
    if path == _OPENAI_COMPLETIONS:
        if not isinstance(body.get("prompt"), str | list):
            return _fail(reply, request, 400, "'prompt' is a required property", "prompt")
        if request.stream:
            return synth.finish(reply, None, synth.completion_stream())
        return synth.finish(reply, synth.completion(), None)
    if path == _OPENAI_RESPONSES:
        if request.stream:
            return synth.finish(reply, None, synth.responses_stream())
        return synth.finish(reply, synth.responses(), None)
    if request.stream:
        return synth.finish(reply, None, synth.messages_stream())
    return synth.finish(reply, synth.messages(), None)


def _synthesize_gemini(
    reply: Reply, request: RecordedRequest, provider: ProviderServer, spec: _Synthesis
) -> Reply:
    body = request.body
    if not isinstance(body, Mapping):
        return _fail(reply, request, 400, "Invalid JSON payload received.")
    if not isinstance(body.get("contents"), list) or not body["contents"]:
        return _fail(
            reply, request, 400, "* GenerateContentRequest.contents: contents is not specified"
        )
    synth = _Synthesizer(provider, request, body, spec.model or request.model or "", spec)
    if not request.stream:
        return synth.finish(reply, synth.gemini(), None)
    if request.query.get("alt") == "sse":
        return synth.finish(reply, None, [_frame(chunk) for chunk in synth.gemini_chunks()])
    return synth.finish(reply, synth.gemini_chunks(), None)


class _Synthesizer:
    """Builds the default reply of one request in the shape of the real API."""

    def __init__(
        self,
        provider: ProviderServer,
        request: RecordedRequest,
        body: Mapping[str, Any],
        model: str,
        spec: _Synthesis,
    ) -> None:
        self.provider = provider
        self.body = body
        self.model = model
        self.spec = spec
        self.serial = provider._next_serial()
        self.created = int(time.time())
        text = spec.text if spec.text is not None else provider.default_text
        pieces = _pieces(text)
        limit = self._max_tokens(request.path.rstrip("/"))
        self.truncated = limit is not None and 0 <= limit < len(pieces)
        if limit is not None and self.truncated:
            pieces = pieces[:limit]
        self.pieces = pieces
        self.text = "".join(pieces)
        self.input_tokens = (
            spec.input_tokens if spec.input_tokens is not None else count_request_tokens(body)
        )
        self.output_tokens = spec.output_tokens if spec.output_tokens is not None else len(pieces)

    def _max_tokens(self, path: str) -> int | None:
        if _GEMINI_PATH.fullmatch(path):
            config = self.body.get("generationConfig")
            value = config.get("maxOutputTokens") if isinstance(config, Mapping) else None
            return value if isinstance(value, int) and not isinstance(value, bool) else None
        names = {
            _OPENAI_CHAT: ("max_completion_tokens", "max_tokens"),
            _OPENAI_COMPLETIONS: ("max_tokens",),
            _OPENAI_RESPONSES: ("max_output_tokens",),
            _ANTHROPIC_MESSAGES: ("max_tokens",),
        }.get(path, ())
        for name in names:
            value = self.body.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return None

    def finish(self, reply: Reply, body: Any, frames: list[bytes] | None) -> Reply:
        if frames is not None:
            return dataclasses.replace(
                reply, body=None, events=tuple(frames), content_type=_SSE_CONTENT_TYPE, dynamic=None
            )
        return dataclasses.replace(
            reply,
            body=json.dumps(body).encode(),
            events=None,
            content_type=_JSON_CONTENT_TYPE,
            dynamic=None,
        )

    # -- OpenAI chat completions -----------------------------------------------------------

    def _chat_usage(self) -> dict[str, Any]:
        base = {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        return _merge(base, self.spec.usage)

    @property
    def _chat_id(self) -> str:
        return f"chatcmpl-test{self.serial:020d}"

    @property
    def _finish_reason(self) -> str:
        return "length" if self.truncated else "stop"

    def chat(self) -> dict[str, Any]:
        return {
            "id": self._chat_id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": self.text,
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": self._finish_reason,
                }
            ],
            "usage": self._chat_usage(),
            "service_tier": "default",
            "system_fingerprint": None,
        }

    def chat_stream(self) -> list[bytes]:
        options = self.body.get("stream_options")
        include_usage = isinstance(options, Mapping) and options.get("include_usage") is True

        def chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
            data: dict[str, Any] = {
                "id": self._chat_id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "service_tier": "default",
                "system_fingerprint": None,
                "choices": choices,
            }
            if include_usage:
                data["usage"] = usage
            return _frame(data)

        def choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

        frames = [chunk([choice({"role": "assistant", "content": "", "refusal": None})])]
        frames.extend(chunk([choice({"content": piece})]) for piece in self.pieces)
        frames.append(chunk([choice({}, self._finish_reason)]))
        if include_usage:
            frames.append(chunk([], self._chat_usage()))
        frames.append(_frame("[DONE]"))
        return frames

    # -- OpenAI legacy completions ---------------------------------------------------------

    def _completion_usage(self) -> dict[str, Any]:
        base = {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
        }
        return _merge(base, self.spec.usage)

    def _completion_body(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": f"cmpl-test{self.serial:020d}",
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "system_fingerprint": None,
        }

    @staticmethod
    def _text_choice(text: str, finish_reason: str | None) -> dict[str, Any]:
        return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}

    def completion(self) -> dict[str, Any]:
        body = self._completion_body([self._text_choice(self.text, self._finish_reason)])
        body["usage"] = self._completion_usage()
        return body

    def completion_stream(self) -> list[bytes]:
        options = self.body.get("stream_options")
        include_usage = isinstance(options, Mapping) and options.get("include_usage") is True

        def chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
            data = self._completion_body(choices)
            if include_usage:
                data["usage"] = usage
            return _frame(data)

        frames = [chunk([self._text_choice(piece, None)]) for piece in self.pieces]
        frames.append(chunk([self._text_choice("", self._finish_reason)]))
        if include_usage:
            frames.append(chunk([], self._completion_usage()))
        frames.append(_frame("[DONE]"))
        return frames

    # -- OpenAI responses ------------------------------------------------------------------

    def _responses_usage(self) -> dict[str, Any]:
        base = {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.input_tokens + self.output_tokens,
        }
        return _merge(base, self.spec.usage)

    def _response(self, status: str, output: list[dict[str, Any]], done: bool) -> dict[str, Any]:
        body = self.body
        temperature = body.get("temperature")
        top_p = body.get("top_p")
        return {
            "id": f"resp_test{self.serial:020d}",
            "object": "response",
            "created_at": self.created,
            "status": status,
            "background": False,
            "completed_at": self.created if status == "completed" else None,
            "error": None,
            "incomplete_details": (
                {"reason": "max_output_tokens"} if status == "incomplete" else None
            ),
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": None,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": body.get("store", True),
            "temperature": temperature if isinstance(temperature, int | float) else 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto",
            "tools": [],
            "top_p": top_p if isinstance(top_p, int | float) else 1.0,
            "truncation": "disabled",
            "usage": self._responses_usage() if done else None,
            "user": None,
            "metadata": body.get("metadata") or {},
        }

    @property
    def _item_id(self) -> str:
        return f"msg_test{self.serial:020d}"

    def _part(self, text: str) -> dict[str, Any]:
        return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}

    def _item(self, status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self._item_id,
            "type": "message",
            "status": status,
            "content": content,
            "role": "assistant",
        }

    @property
    def _final_status(self) -> str:
        return "incomplete" if self.truncated else "completed"

    def responses(self) -> dict[str, Any]:
        item = self._item(self._final_status, [self._part(self.text)])
        return self._response(self._final_status, [item], done=True)

    def responses_stream(self) -> list[bytes]:
        frames: list[bytes] = []

        def emit(kind: str, **fields: Any) -> None:
            frames.append(_frame({"type": kind, **fields, "sequence_number": len(frames)}, kind))

        common = {"item_id": self._item_id, "output_index": 0, "content_index": 0}
        pending = self._response("in_progress", [], done=False)
        emit("response.created", response=pending)
        emit("response.in_progress", response=pending)
        emit("response.output_item.added", item=self._item("in_progress", []), output_index=0)
        emit("response.content_part.added", part=self._part(""), **common)
        for piece in self.pieces:
            emit("response.output_text.delta", delta=piece, logprobs=[], **common)
        emit("response.output_text.done", text=self.text, logprobs=[], **common)
        emit("response.content_part.done", part=self._part(self.text), **common)
        item = self._item(self._final_status, [self._part(self.text)])
        emit("response.output_item.done", item=item, output_index=0)
        final = self._response(self._final_status, [item], done=True)
        emit(f"response.{self._final_status}", response=final)
        return frames

    # -- OpenAI embeddings -----------------------------------------------------------------

    def embeddings(self) -> dict[str, Any]:
        raw = self.body.get("input")
        items: list[Any]
        if isinstance(raw, str) or (
            isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw)
        ):
            items = [raw]
        else:
            items = list(raw) if isinstance(raw, list) else []
        dimensions = self.body.get("dimensions")
        if not isinstance(dimensions, int) or dimensions <= 0:
            dimensions = self.provider.embedding_dimensions
        as_base64 = self.body.get("encoding_format") == "base64"
        data = []
        for index, item in enumerate(items):
            packed = _embedding_bytes(_dumps([self.model, item]), dimensions)
            vector: Any
            if as_base64:
                vector = base64.b64encode(packed).decode()
            else:
                vector = list(struct.unpack(f"<{dimensions}f", packed))
            data.append({"object": "embedding", "index": index, "embedding": vector})
        usage = _merge(
            {"prompt_tokens": self.input_tokens, "total_tokens": self.input_tokens},
            self.spec.usage,
        )
        return {"object": "list", "data": data, "model": self.model, "usage": usage}

    # -- Anthropic messages ----------------------------------------------------------------

    def _messages_usage(self, output_tokens: int) -> dict[str, Any]:
        base = {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens": output_tokens,
            "service_tier": "standard",
        }
        return _merge(base, self.spec.usage)

    @property
    def _message_id(self) -> str:
        return f"msg_test{self.serial:020d}"

    @property
    def _stop_reason(self) -> str:
        return "max_tokens" if self.truncated else "end_turn"

    def messages(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "id": self._message_id,
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": self.text}],
            "stop_reason": self._stop_reason,
            "stop_sequence": None,
            "usage": self._messages_usage(self.output_tokens),
        }

    def messages_stream(self) -> list[bytes]:
        start_usage = self._messages_usage(min(1, self.output_tokens))
        message: dict[str, Any] = {
            "model": self.model,
            "id": self._message_id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": start_usage,
        }
        final_usage = self._messages_usage(self.output_tokens)
        final_usage.pop("cache_creation", None)
        final_usage.pop("service_tier", None)

        def event(kind: str, **fields: Any) -> bytes:
            return _frame({"type": kind, **fields}, kind)

        frames = [
            event("message_start", message=message),
            event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
            event("ping"),
        ]
        frames.extend(
            event("content_block_delta", index=0, delta={"type": "text_delta", "text": piece})
            for piece in self.pieces
        )
        frames.append(event("content_block_stop", index=0))
        frames.append(
            event(
                "message_delta",
                delta={"stop_reason": self._stop_reason, "stop_sequence": None},
                usage=final_usage,
            )
        )
        frames.append(event("message_stop"))
        return frames

    # -- Gemini generateContent ------------------------------------------------------------

    def _gemini_usage(self, candidates_tokens: int) -> dict[str, Any]:
        usage = _merge(
            {
                "promptTokenCount": self.input_tokens,
                "candidatesTokenCount": candidates_tokens,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": self.input_tokens}],
            },
            self.spec.usage,
        )
        if "totalTokenCount" not in usage:
            parts = ("promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount")
            usage["totalTokenCount"] = sum(usage.get(name) or 0 for name in parts)
        return usage

    def _gemini_response(self, text: str, finish: bool, candidates_tokens: int) -> dict[str, Any]:
        candidate: dict[str, Any] = {
            "content": {"parts": [{"text": text}], "role": "model"},
            "index": 0,
        }
        if finish:
            candidate["finishReason"] = "MAX_TOKENS" if self.truncated else "STOP"
        return {
            "candidates": [candidate],
            "usageMetadata": self._gemini_usage(candidates_tokens),
            "modelVersion": self.model,
            "responseId": f"gemini-test{self.serial:012d}",
        }

    def gemini(self) -> dict[str, Any]:
        return self._gemini_response(self.text, True, self.output_tokens)

    def gemini_chunks(self) -> list[dict[str, Any]]:
        """One chunk per token, each with the usage so far (cumulative, as Gemini sends it)."""
        pieces = self.pieces or [""]
        chunks = []
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            so_far = self.output_tokens if last else min(index + 1, self.output_tokens)
            chunks.append(self._gemini_response(piece, last, so_far))
        return chunks


@functools.lru_cache(maxsize=1024)
def _embedding_bytes(key: str, dimensions: int) -> bytes:
    """A deterministic unit vector for ``key``, as little-endian float32 bytes."""
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    rng = random.Random(seed)
    vector = [rng.uniform(-1.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return struct.pack(f"<{dimensions}f", *(v / norm for v in vector))


# --------------------------------------------------------------------------------------------
# The HTTP side
# --------------------------------------------------------------------------------------------


class _Dropped(Exception):
    """Raised inside the handler to abandon the connection without a clean end."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "obsdeco-test-provider"
    sys_version = ""
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: tests read `ProviderServer.requests` instead of a log."""

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self._read_exactly(size))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self._read_exactly(length) if length > 0 else b""

    def _read_exactly(self, size: int) -> bytes:
        data = self.rfile.read(size)
        if len(data) != size:
            raise ConnectionError("the client closed the connection mid-body")
        return data

    def _serve(self) -> None:
        provider = self.server.provider
        try:
            raw = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        split = urlsplit(self.path)
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        request = RecordedRequest(
            method=self.command,
            path=split.path,
            query=dict(parse_qsl(split.query, keep_blank_values=True)),
            headers=headers,
            body=body,
            raw_body=raw,
            request_id=f"req_test{provider._next_serial():016d}",
            received_at=time.monotonic(),
        )
        provider._record(request)
        try:
            reply = provider._reply_for(request)
        except Exception as exc:
            provider._note_error(exc)
            failure = f"the obsdeco test provider could not build a reply: {exc!r}"
            reply = _fail(Reply(), request, 500, failure)
        try:
            self._send(reply, request)
        except _Dropped:
            self._drop()
        except OSError:
            self.close_connection = True

    def _wait(self, seconds: float) -> None:
        if seconds > 0 and self.server.stopping.wait(seconds):
            raise _Dropped

    def _wait_for(self, event: threading.Event) -> None:
        while not event.wait(0.02):
            if self.server.stopping.is_set():
                raise _Dropped

    def _send(self, reply: Reply, request: RecordedRequest) -> None:
        self._wait(reply.delay)
        if reply.hold is not None and reply.hold_after is None:
            self._wait_for(reply.hold)
        if reply.no_response:
            raise _Dropped
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("x-request-id", request.request_id)
        self.send_header("request-id", request.request_id)
        for name, value in reply.headers:
            self.send_header(name, value)
        if reply.events is None:
            body = reply.body or b""
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if reply.drop_after is not None and reply.drop_after < len(body):
                self.wfile.write(body[: reply.drop_after])
                raise _Dropped
            self.wfile.write(body)
            return
        # HTTP/1.1 clients get one chunk per event; an HTTP/1.0 client cannot take chunked
        # encoding, so its stream simply ends when the connection closes.
        chunked = self.request_version == "HTTP/1.1"
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.close_connection = True
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        for index, frame in enumerate(reply.events):
            self._before_event(reply, index)
            if index and reply.event_delay:
                self._wait(reply.event_delay)
            self.wfile.write(b"%x\r\n%b\r\n" % (len(frame), frame) if chunked else frame)
            self.wfile.flush()
        self._before_event(reply, len(reply.events))
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _before_event(self, reply: Reply, index: int) -> None:
        if reply.hold is not None and reply.hold_after == index:
            self._wait_for(reply.hold)
        if reply.drop_after is not None and reply.drop_after <= index:
            raise _Dropped

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class _Server(HTTPServer):
    """An HTTPServer with one thread per connection, each tracked so `abort` can end them."""

    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], provider: ProviderServer) -> None:
        self.provider = provider
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind also looks the host name up (getfqdn), which can be slow.
        socketserver.TCPServer.server_bind(self)
        host, port = self.socket.getsockname()[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        request.setblocking(True)
        thread = threading.Thread(
            target=self._run_connection,
            args=(request, client_address),
            name="obsdeco-provider-connection",
            daemon=True,
        )
        with self._lock:
            self._connections[request] = thread
        thread.start()

    def _run_connection(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def close_request(self, request: Any) -> None:
        with self._lock:
            self._connections.pop(request, None)
            super().close_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if error is not None and not isinstance(error, OSError):
            self.provider._note_error(error)

    def abort_connections(self, timeout: float) -> None:
        """Shut every open connection down (unblocking its thread) and wait for the threads."""
        with self._lock:
            connections = list(self._connections.items())
            for connection, _ in connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for _, thread in connections:
            thread.join(max(0.0, deadline - time.monotonic()))


@dataclass(frozen=True, slots=True)
class _Queued:
    path: str | None
    item: Reply | Responder


class ProviderServer:
    """A local HTTP server answering like the OpenAI, Anthropic and Gemini APIs.

    Use it as a context manager (``with ProviderServer() as provider:``) or call `start` and
    `stop`. Point the SDKs at it with ``openai.OpenAI(base_url=provider.openai_base_url,
    api_key="test")`` and ``anthropic.Anthropic(base_url=provider.anthropic_base_url,
    api_key="test")``, and google-genai with ``genai.Client(api_key="test",
    http_options=HttpOptions(base_url=provider.gemini_base_url))``. Queue replies with
    `enqueue`; read what the SDKs sent in `requests`.
    All methods are thread-safe.

    ``default_text`` is the assistant text of synthesised replies and
    ``embedding_dimensions`` the length of synthesised embeddings (unless the request gives
    ``dimensions``).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        default_text: str = DEFAULT_TEXT,
        embedding_dimensions: int = 1536,
    ) -> None:
        self._host = host
        self._port = port
        self.default_text = default_text
        """The assistant text of synthesised replies."""
        self.embedding_dimensions = embedding_dimensions
        """The length of synthesised embedding vectors."""
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._queue: list[_Queued] = []
        self._requests: list[RecordedRequest] = []
        self._errors: list[BaseException] = []
        self._default: Reply | Responder = Reply.default()
        self._serial = 0
        self._lifecycle = threading.Lock()
        self._server: _Server | None = None
        self._acceptor: threading.Thread | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Start listening (on a free port unless one was given) and return ``self``."""
        with self._lifecycle:
            if self._server is not None:
                raise RuntimeError("the provider server is already running")
            server = _Server((self._host, self._port), self)
            server.socket.setblocking(False)
            wake = socket.socketpair()
            acceptor = threading.Thread(
                target=self._accept_loop,
                args=(server, wake[0]),
                name="obsdeco-provider-accept",
                daemon=True,
            )
            self._server, self._wake, self._acceptor = server, wake, acceptor
            acceptor.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop: close the listening socket and every connection, and join every thread.

        Responses in flight are cut off. Calling it again, or before `start`, does nothing.
        """
        with self._lifecycle:
            server, wake, acceptor = self._server, self._wake, self._acceptor
            if server is None or wake is None or acceptor is None:
                return
            self._server = self._wake = self._acceptor = None
            server.stopping.set()
            with contextlib.suppress(OSError):
                wake[1].send(b"x")
            acceptor.join(timeout)
            server.abort_connections(timeout)
            server.server_close()
            wake[0].close()
            wake[1].close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _accept_loop(self, server: _Server, wake: socket.socket) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(server.socket, selectors.EVENT_READ)
            selector.register(wake, selectors.EVENT_READ)
            while not server.stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is wake:
                        return
                    try:
                        connection, address = server.get_request()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        if server.stopping.is_set():
                            return
                        continue
                    server.process_request(connection, address)

    # -- addresses -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the server is listening."""
        return self._server is not None

    @property
    def port(self) -> int:
        """The port the server listens on."""
        server = self._server
        if server is None:
            raise RuntimeError("the provider server is not running; call start() first")
        return server.server_port

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return self._host

    @property
    def base_url(self) -> str:
        """The server's root URL, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{self._host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """The ``base_url`` for ``openai.OpenAI``: the root URL plus ``/v1``."""
        return f"{self.base_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """The ``base_url`` for ``anthropic.Anthropic``: the root URL."""
        return self.base_url

    @property
    def gemini_base_url(self) -> str:
        """The ``base_url`` for google-genai's ``HttpOptions``: the root URL (the SDK adds the
        API version, e.g. ``/v1beta``)."""
        return self.base_url

    # -- scripting -------------------------------------------------------------------------

    def enqueue(self, *replies: Reply | Responder, path: str | None = None) -> None:
        """Queue replies for the next requests, first in first out.

        With ``path`` (e.g. ``"/v1/messages"``) they are kept for requests to that path only;
        other requests take the first queued reply without a path. A `Responder` (a function of
        the `RecordedRequest`) may stand in for a reply.
        """
        wanted = path.rstrip("/") if path is not None else None
        with self._lock:
            self._queue.extend(_Queued(wanted, reply) for reply in replies)

    @property
    def pending(self) -> int:
        """How many queued replies no request has taken yet."""
        with self._lock:
            return len(self._queue)

    @property
    def default_reply(self) -> Reply | Responder:
        """What requests get when nothing queued matches; `Reply.default` unless set."""
        with self._lock:
            return self._default

    @default_reply.setter
    def default_reply(self, reply: Reply | Responder) -> None:
        with self._lock:
            self._default = reply

    def reset(self) -> None:
        """Forget queued replies, recorded requests and errors; restore the default reply."""
        with self._lock:
            self._queue.clear()
            self._requests.clear()
            self._errors.clear()
            self._default = Reply.default()

    # -- observation -----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def last_request(self) -> RecordedRequest:
        """The latest request received; `LookupError` if there was none."""
        with self._lock:
            if not self._requests:
                raise LookupError("the provider server has received no request")
            return self._requests[-1]

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised while building replies (e.g. by a `Responder`), oldest first."""
        with self._lock:
            return list(self._errors)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least ``count`` requests have arrived, then return them all.

        Raises `TimeoutError` if they have not arrived within ``timeout`` seconds.
        """
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self._requests) >= count, timeout):
                raise TimeoutError(
                    f"{len(self._requests)} of {count} requests arrived within {timeout}s"
                )
            return list(self._requests)

    # -- used by the handler ---------------------------------------------------------------

    def _next_serial(self) -> int:
        with self._lock:
            self._serial += 1
            return self._serial

    def _record(self, request: RecordedRequest) -> None:
        with self._arrived:
            self._requests.append(request)
            self._arrived.notify_all()

    def _note_error(self, error: BaseException) -> None:
        with self._lock:
            self._errors.append(error)

    def _reply_for(self, request: RecordedRequest) -> Reply:
        path = request.path.rstrip("/")
        with self._lock:
            chosen: Reply | Responder = self._default
            for index, queued in enumerate(self._queue):
                if queued.path is None or queued.path == path:
                    chosen = queued.item
                    del self._queue[index]
                    break
        reply = chosen if isinstance(chosen, Reply) else chosen(request)
        if not isinstance(reply, Reply):
            raise TypeError(f"a responder returned {type(reply).__name__}, not a Reply")
        if reply.dynamic is not None:
            reply = reply.dynamic(reply, request, self)
        return reply
