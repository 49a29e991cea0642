"""What of a batch may be stored: applied on the writer thread, in place, before storage.

Without `capture_content` no prompt or completion is kept, whatever was recorded. With it, each
is scrubbed (`scrub_pii`, `pii_patterns`, `scrubber`) and cut to `content_max_chars` (the cut
marked). Error messages (of calls and of sessions) and score comments, kept whatever the
settings, lose any PII or secret they quote.
Metadata keys pass `metadata_allow` / `metadata_deny`; values JSON cannot hold are converted to
text, or dropped when even that fails, and counted.
"""

from __future__ import annotations

import json
import logging
import math
import weakref
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any

from obsdeco.config import Settings
from obsdeco.models import LLMCall, storable_text
from obsdeco.privacy.scrub import Scrubber
from obsdeco.storage.base import WriteBatch

logger = logging.getLogger("obsdeco")

TRUNCATION_MARK = "…[truncated {} characters]"
_SCRUB_MARGIN = 16_384
"""Characters scrubbed past the cut: more than a private key block."""


class ContentPolicy:
    """Applies the settings' privacy rules to the records of a batch."""

    def __init__(self, settings: Settings, count: Callable[[str, int], None] | None = None) -> None:
        self._capture = settings.capture_content
        self._max_chars = settings.content_max_chars
        self._scrub = (
            Scrubber(settings.pii_patterns, settings.scrubber)
            if settings.scrub_pii
            else settings.scrubber
        )
        self._allow = settings.metadata_allow
        self._deny = settings.metadata_deny
        self._secrets = Scrubber()
        self._count = count
        self.converted = 0
        self.dropped = 0
        self.scrub_failures = 0
        self._done: weakref.WeakValueDictionary[int, LLMCall] = weakref.WeakValueDictionary()

    def apply(self, batch: WriteBatch) -> None:
        """Idempotent: a batch the writer retries, or splits, is not cut or scrubbed twice."""
        done = self._done
        for call in batch.calls:
            fields = call.__dict__
            if not (
                fields["metadata"]
                or fields["error_message"]
                or fields["prompt"] is not None
                or fields["completion"] is not None
            ):
                continue  # nothing to filter (most calls): no need to remember it
            if done.get(id(call)) is call:
                continue
            if call.prompt is not None or call.completion is not None:
                if self._capture:
                    self._capture_content(call)
                else:
                    call.prompt = call.completion = None
            if call.error_message:
                call.error_message = self.error_message(call.error_message)
            if call.metadata:
                call.metadata = self.metadata(call.metadata)
            done[id(call)] = call
        for state in batch.sessions:
            session = state.session
            if session.error_message:
                session.error_message = self.error_message(session.error_message)
            if session.metadata:
                session.metadata = self.metadata(session.metadata)
        for score in batch.scores:
            if score.comment:
                score.comment = self.error_message(score.comment)

    def error_message(self, text: str) -> str:
        """An error message as stored, whatever the settings: without PII or secrets."""
        return storable_text(self._secrets(text))

    def _capture_content(self, call: LLMCall) -> None:
        """Scrub, then cut; a scrubber that fails leaves no content rather than raw content."""
        try:
            call.prompt = self._content(call.prompt)
            call.completion = self._content(call.completion)
        except Exception:
            call.prompt = call.completion = None
            self.scrub_failures += 1
            if self.scrub_failures == 1:
                logger.exception("obsdeco scrubbing failed: the call is stored without content")

    def _content(self, text: str | None) -> str | None:
        if text is None:
            return None
        limit = self._max_chars
        # Scrubbed before the cut, so that no secret is cut in two; past this margin nothing
        # can reach back into what is kept.
        text = text[: limit + _SCRUB_MARGIN]
        if self._scrub is not None:
            text = self._scrub(text)
        if len(text) > limit:
            text = text[:limit] + TRUNCATION_MARK.format(len(text) - limit)
        return storable_text(text)

    def metadata(self, values: dict[str, Any]) -> dict[str, Any]:
        """The keys the filters let through, with JSON-ready values."""
        kept = {}
        for key, value in values.items():
            if self._allow is not None and not any(fnmatchcase(key, p) for p in self._allow):
                continue
            if any(fnmatchcase(key, pattern) for pattern in self._deny):
                continue
            ready = self._json_ready(key, value)
            if ready is not _DROPPED:
                kept[key] = ready
        return kept

    def _json_ready(self, key: str, value: Any) -> Any:
        try:
            if "\\u0000" not in json.dumps(value, allow_nan=False):
                return value
        except (TypeError, ValueError, RecursionError):
            pass
        if isinstance(value, float) and not math.isfinite(value):
            return self._drop(key, value)
        try:
            text = json.dumps(value, default=str, allow_nan=False).replace("\\u0000", "")
            converted = json.loads(storable_text(text))
        except (TypeError, ValueError, RecursionError):
            return self._drop(key, value)
        self.converted += 1
        if self._count is not None:
            self._count("metadata_values_converted", 1)
        if self.converted == 1:
            logger.warning(
                "obsdeco metadata %r is not JSON (%s): stored as text; see obsdeco.stats()",
                key,
                type(value).__name__,
            )
        return converted

    def _drop(self, key: str, value: Any) -> object:
        self.dropped += 1
        if self._count is not None:
            self._count("metadata_values_dropped", 1)
        if self.dropped == 1:
            logger.warning(
                "obsdeco metadata %r (%s) cannot be stored and was dropped; see obsdeco.stats()",
                key,
                type(value).__name__,
            )
        return _DROPPED


_DROPPED = object()
