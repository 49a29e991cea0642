"""An incremental decoder of server-sent events (the `text/event-stream` format).

It is fed the bytes of a body as they arrive, in chunks cut anywhere (inside a line, between
the CR and LF of a line end), and returns the `data` of each event completed so far. Lines end
with LF, CR or CRLF; an event ends at a blank line; its `data:` lines are joined with LF; other
fields and comments are skipped. The seams read only the data (every provider's events carry
their type in their JSON).
"""

from __future__ import annotations


class SSEDecoder:
    """Turns a byte stream into the data of its events, as they complete."""

    __slots__ = ("_data", "_pending")

    def __init__(self) -> None:
        self._pending = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[str]:
        """The data of the events that `chunk` completes (often none, often one)."""
        buffer = self._pending + chunk if self._pending else chunk
        lines = buffer.splitlines(keepends=True)
        # A last line without its end is kept for the next chunk, and so is one ending with CR,
        # whose LF may start the next chunk (it would otherwise read as a blank line).
        if lines and not lines[-1].endswith(b"\n"):
            self._pending = lines.pop()
        else:
            self._pending = b""
        events: list[str] = []
        for line in lines:
            self._line(line.rstrip(b"\r\n"), events)
        return events

    def finish(self) -> list[str]:
        """The data of an event the body ended in without its blank line (if any)."""
        events: list[str] = []
        if self._pending:
            self._line(self._pending.rstrip(b"\r\n"), events)
            self._pending = b""
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[str]) -> None:
        if not line:
            if self._data:
                events.append(b"\n".join(self._data).decode("utf-8", "replace"))
                self._data = []
            return
        name, _, value = line.partition(b":")
        if name == b"data":
            self._data.append(value[1:] if value.startswith(b" ") else value)
