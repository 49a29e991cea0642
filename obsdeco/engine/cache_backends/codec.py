"""The stored form of a cached response: a versioned binary record, sealed with AES-GCM when
an encryption key is configured. Never pickle: reading a value runs no code of the writer's.

Plain record: `b"odc1"`, then big-endian status (uint16), stored_at and expires_at (float64,
infinity for no expiry) and the length of the headers (uint32), the headers as a JSON list of
[name, value] pairs, then the body. Sealed record: `b"odx1"` followed by the plain record
sealed by `Cipher.seal`, the cache key bound in, so a value copied to another key is refused.
"""

from __future__ import annotations

import json
import math
import struct

from obsdeco.engine.cache_backends.base import CachedResponse
from obsdeco.privacy.encryption import Cipher, EncryptionError

_PLAIN = b"odc1"
_SEALED = b"odx1"
_FIXED = struct.Struct(">HddI")
_HEAD = len(_PLAIN) + _FIXED.size


class UnreadableValue(ValueError):
    """A stored value this process cannot use; `cause` names why, for logging once each."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause


def encode(
    key: str, response: CachedResponse, expires_at: float | None, cipher: Cipher | None
) -> bytes:
    """The stored form of `response` under `key`."""
    headers = json.dumps(response.headers, separators=(",", ":")).encode()
    fixed = _FIXED.pack(
        response.status,
        response.stored_at,
        math.inf if expires_at is None else expires_at,
        len(headers),
    )
    plain = b"".join((_PLAIN, fixed, headers, response.body))
    if cipher is None:
        return plain
    return _SEALED + cipher.seal(plain, _context(key))


def decode(key: str, value: bytes, cipher: Cipher | None) -> tuple[CachedResponse, float | None]:
    """The response stored in `value` and when it expires; UnreadableValue if it cannot be
    used with this cipher (another key, no key, damaged, not encrypted, unknown format)."""
    magic = value[: len(_PLAIN)]
    if magic == _SEALED:
        if cipher is None:
            raise UnreadableValue(
                "encrypted-no-key",
                "a cached response is encrypted and no encryption_key is configured",
            )
        try:
            value = cipher.unseal(value[len(_SEALED) :], _context(key))
        except EncryptionError as exc:
            raise UnreadableValue(
                "undecryptable", f"a cached response cannot be read: {exc}"
            ) from None
        magic = value[: len(_PLAIN)]
    elif magic == _PLAIN and cipher is not None:
        raise UnreadableValue(
            "not-encrypted",
            "a cached response is stored unencrypted while an encryption_key is configured",
        )
    if magic != _PLAIN or len(value) < _HEAD:
        raise UnreadableValue("unknown-format", "a cached value is not in a format obsdeco knows")
    status, stored_at, expires_at, headers_length = _FIXED.unpack_from(value, len(_PLAIN))
    body_start = _HEAD + headers_length
    try:
        pairs = json.loads(value[_HEAD:body_start])
        headers = tuple((str(name), str(text)) for name, text in pairs)
    except (ValueError, TypeError) as exc:
        raise UnreadableValue("damaged", f"a cached value is damaged: {exc}") from None
    response = CachedResponse(status, headers, value[body_start:], stored_at)
    return response, None if math.isinf(expires_at) else expires_at


def _context(key: str) -> bytes:
    return b"obsdeco-cache:" + key.encode()
