"""The store as obsdeco uses it: the privacy rules applied on the way in, encryption in both
directions, around whichever backend the database URL names."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from obsdeco.config import Settings, key_bytes
from obsdeco.models import LLMCall, Score, Session, SessionRecord, SessionSummary
from obsdeco.privacy.encryption import Cipher, decrypt_or_explain, is_encrypted
from obsdeco.privacy.policy import ContentPolicy
from obsdeco.storage import open_backend
from obsdeco.storage.base import (
    CallFilter,
    ScoreFilter,
    SessionFilter,
    SessionState,
    StorageBackend,
    WriteBatch,
)

_ENCRYPTED_METADATA = "obsdeco_encrypted"


class PrivateStorage:
    """A `StorageBackend` that filters, scrubs and encrypts what reaches `inner`, and decrypts
    what comes back. Everything else is `inner`'s."""

    def __init__(
        self,
        inner: StorageBackend,
        settings: Settings,
        count: Callable[[str, int], None] | None = None,
    ) -> None:
        """`count(counter, amount)` is told of metadata values converted or dropped."""
        self.inner = inner
        self._policy = ContentPolicy(settings, count)
        key = settings.encryption_key
        self._cipher = None if key is None else Cipher(key_bytes(key.get_secret_value()))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    # --- in ----------------------------------------------------------------------------------

    def write(self, batch: WriteBatch) -> None:
        """Runs on the writer thread: the rules change the records in place (so that this
        process's reports show what is stored), encryption works on copies."""
        self._policy.apply(batch)
        if self._cipher is not None:
            batch = WriteBatch(
                sessions=[
                    SessionState(self._sealed_session(state.session), state.totals)
                    for state in batch.sessions
                ],
                calls=[self._sealed_call(call) for call in batch.calls],
                spans=batch.spans,
                scores=[self._sealed_score(score) for score in batch.scores],
            )
        self.inner.write(batch)

    def _sealed_call(self, call: LLMCall) -> LLMCall:
        cipher = self._cipher
        assert cipher is not None
        changes: dict[str, Any] = {"metadata": self._sealed_metadata(call.metadata, "llm_calls")}
        for column in ("prompt", "completion"):
            text = getattr(call, column)
            if text is not None:
                changes[column] = cipher.encrypt(text, f"llm_calls.{column}")
        return call.model_copy(update=changes)

    def _sealed_score(self, score: Score) -> Score:
        assert self._cipher is not None
        if score.comment is None:
            return score
        comment = self._cipher.encrypt(score.comment, "scores.comment")
        return score.model_copy(update={"comment": comment})

    def _sealed_session(self, session: Session) -> Session:
        return session.model_copy(
            update={"metadata": self._sealed_metadata(session.metadata, "sessions")}
        )

    def _sealed_metadata(self, metadata: dict[str, Any], table: str) -> dict[str, Any]:
        if not metadata:
            return {}
        assert self._cipher is not None
        token = self._cipher.encrypt(json.dumps(metadata), f"{table}.metadata")
        return {_ENCRYPTED_METADATA: token}

    # --- out ---------------------------------------------------------------------------------

    def get_session(self, session_id: str) -> SessionRecord | None:
        record = self.inner.get_session(session_id)
        if record is None:
            return None
        return SessionRecord(
            session=self._opened_session(record.session),
            calls=[self._opened_call(call) for call in record.calls],
            spans=record.spans,
        )

    def query_sessions(self, *args: Any, **kwargs: Any) -> list[SessionSummary]:
        return [
            summary.model_copy(update={"session": self._opened_session(summary.session)})
            for summary in self.inner.query_sessions(*args, **kwargs)
        ]

    def query_calls(
        self, where: CallFilter, limit: int | None = None, offset: int = 0
    ) -> list[LLMCall]:
        return [self._opened_call(call) for call in self.inner.query_calls(where, limit, offset)]

    def iter_calls(self, where: CallFilter, batch_size: int = 1_000) -> Iterator[list[LLMCall]]:
        """Decrypted with the configured key; without one, as stored (for exports)."""
        for page in self.inner.iter_calls(where, batch_size):
            yield page if self._cipher is None else [self._opened_call(call) for call in page]

    def iter_sessions(
        self, where: SessionFilter, batch_size: int = 1_000
    ) -> Iterator[list[SessionSummary]]:
        """Decrypted with the configured key; without one, as stored (for exports)."""
        for page in self.inner.iter_sessions(where, batch_size):
            if self._cipher is None:
                yield page
                continue
            yield [
                summary.model_copy(update={"session": self._opened_session(summary.session)})
                for summary in page
            ]

    def find_target(self, target_id: str) -> Session | LLMCall | None:
        found = self.inner.find_target(target_id)
        if isinstance(found, Session):
            return self._opened_session(found)
        return None if found is None else self._opened_call(found)

    def iter_scores(self, where: ScoreFilter, batch_size: int = 1_000) -> Iterator[list[Score]]:
        """Comments decrypted with the configured key; without one, as stored (for exports)."""
        for page in self.inner.iter_scores(where, batch_size):
            yield page if self._cipher is None else [self._opened_score(score) for score in page]

    def query_scores(
        self, where: ScoreFilter, limit: int | None = None, offset: int = 0
    ) -> list[Score]:
        found = self.inner.query_scores(where, limit, offset)
        return [self._opened_score(score) for score in found]

    def _opened_score(self, score: Score) -> Score:
        if not is_encrypted(score.comment):
            return score
        comment = decrypt_or_explain(self._cipher, score.comment, "scores.comment")
        return score.model_copy(update={"comment": comment})

    def _opened_call(self, call: LLMCall) -> LLMCall:
        changes: dict[str, Any] = {}
        if _ENCRYPTED_METADATA in call.metadata:
            changes["metadata"] = self._opened_metadata(call.metadata, "llm_calls")
        for column in ("prompt", "completion"):
            text = getattr(call, column)
            if is_encrypted(text):
                changes[column] = decrypt_or_explain(self._cipher, text, f"llm_calls.{column}")
        return call.model_copy(update=changes) if changes else call

    def _opened_session(self, session: Session) -> Session:
        if _ENCRYPTED_METADATA not in session.metadata:
            return session
        opened = self._opened_metadata(session.metadata, "sessions")
        return session.model_copy(update={"metadata": opened})

    def _opened_metadata(self, metadata: dict[str, Any], table: str) -> dict[str, Any]:
        token = metadata[_ENCRYPTED_METADATA]
        opened: dict[str, Any] = json.loads(
            decrypt_or_explain(self._cipher, token, f"{table}.metadata")
        )
        return opened


def open_store(
    settings: Settings, count: Callable[[str, int], None] | None = None
) -> StorageBackend:
    """The backend for the settings' database URL, behind their privacy rules."""
    return PrivateStorage(open_backend(settings.database_url), settings, count)  # type: ignore[return-value]
