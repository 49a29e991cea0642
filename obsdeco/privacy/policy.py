"""What of a batch may be stored: applied on the writer thread, in place, before storage.

Without `capture_content` no prompt or completion is kept, whatever was recorded. With it, each
is cut to `content_max_chars` (the cut marked) and scrubbed (`scrub_pii`, `pii_patterns`,
`scrubber`). Metadata keys pass `metadata_allow` / `metadata_deny`; values JSON cannot hold are
converted to text, or dropped when even that fails, and counted.
"""

from __future__ import annotations

import json
import logging
import math
import weakref
from fnmatch import fnmatchcase
from typing import Any

from obsdeco.config import Settings
from obsdeco.models import LLMCall
from obsdeco.privacy.scrub import Scrubber
from obsdeco.storage.base import WriteBatch

logger = logging.getLogger("obsdeco")

TRUNCATION_MARK = "…[truncated {} characters]"


class ContentPolicy:
    """Applies the settings' privacy rules to the records of a batch."""

    def __init__(self, settings: Settings) -> None:
        self._capture = settings.capture_content
        self._max_chars = settings.content_max_chars
        self._scrub = (
            Scrubber(settings.pii_patterns, settings.scrubber)
            if settings.scrub_pii
            else settings.scrubber
        )
        self._allow = settings.metadata_allow
        self._deny = settings.metadata_deny
        self.converted = 0
        self.dropped = 0
        self._done: weakref.WeakValueDictionary[int, LLMCall] = weakref.WeakValueDictionary()

    def apply(self, batch: WriteBatch) -> None:
        """Idempotent: a batch the writer retries, or splits, is not cut or scrubbed twice."""
        done = self._done
        for call in batch.calls:
            if done.get(id(call)) is call:
                continue
            done[id(call)] = call
            if call.prompt is not None or call.completion is not None:
                if self._capture:
                    call.prompt = self._content(call.prompt)
                    call.completion = self._content(call.completion)
                else:
                    call.prompt = call.completion = None
            if call.metadata:
                call.metadata = self.metadata(call.metadata)
        for state in batch.sessions:
            if state.session.metadata:
                state.session.metadata = self.metadata(state.session.metadata)

    def _content(self, text: str | None) -> str | None:
        if text is None:
            return None
        if len(text) > self._max_chars:
            cut = len(text) - self._max_chars
            text = text[: self._max_chars] + TRUNCATION_MARK.format(cut)
        return self._scrub(text) if self._scrub is not None else text

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
            json.dumps(value, allow_nan=False)
            return value
        except (TypeError, ValueError):
            pass
        if isinstance(value, float) and not math.isfinite(value):
            return self._drop(key, value)
        try:
            converted = json.loads(json.dumps(value, default=str, allow_nan=False))
        except (TypeError, ValueError):
            return self._drop(key, value)
        self.converted += 1
        if self.converted == 1:
            logger.warning(
                "obsdeco metadata %r is not JSON (%s): stored as text; see obsdeco.stats()",
                key,
                type(value).__name__,
            )
        return converted

    def _drop(self, key: str, value: Any) -> object:
        self.dropped += 1
        if self.dropped == 1:
            logger.warning(
                "obsdeco metadata %r (%s) cannot be stored and was dropped; see obsdeco.stats()",
                key,
                type(value).__name__,
            )
        return _DROPPED


_DROPPED = object()
