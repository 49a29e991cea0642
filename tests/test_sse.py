"""The incremental SSE decoder: the same events however the bytes are cut."""

from __future__ import annotations

import pytest

from obsdeco.integrations.sse import SSEDecoder
from obsdeco.testing import load_fixture

BODY = (
    b": a comment\n"
    b"event: message_start\n"
    b'data: {"a": 1}\n'
    b"\n"
    b"id: 7\n"
    b"retry: 100\n"
    b"data: first line\n"
    b"data:second line\n"
    b"data\n"
    b"\n"
    b"\n"
    b"data: [DONE]\n"
    b"\n"
)
EVENTS = ['{"a": 1}', "first line\nsecond line\n", "[DONE]"]


def decode(chunks: list[bytes]) -> list[str]:
    decoder = SSEDecoder()
    events: list[str] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events + decoder.finish()


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_every_cut_gives_the_same_events(ending: bytes) -> None:
    body = BODY.replace(b"\n", ending)
    assert decode([body]) == EVENTS
    for cut in range(1, len(body)):
        assert decode([body[:cut], body[cut:]]) == EVENTS, cut
    assert decode([body[index : index + 1] for index in range(len(body))]) == EVENTS


def test_events_complete_as_their_blank_line_arrives() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: one\n") == []
    assert decoder.feed(b"\ndata: tw") == ["one"]
    assert decoder.feed(b"o\n\n") == ["two"]
    assert decoder.finish() == []


def test_an_event_without_its_blank_line_ends_with_the_body() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: last") == []
    assert decoder.finish() == ["last"]


def test_a_recorded_stream_decodes_to_its_data_lines() -> None:
    body = load_fixture("anthropic/messages_stream.sse")
    data = [line[6:].decode() for line in body.splitlines() if line.startswith(b"data: ")]
    assert decode([body[index : index + 10] for index in range(0, len(body), 10)]) == data
