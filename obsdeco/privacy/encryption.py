"""Authenticated encryption (AES-256-GCM) of captured content and metadata, before storage.

A value is stored as `obsdeco:v1:<key id>:<base64 nonce + ciphertext + tag>`; the key id (the
first bytes of the key's SHA-256) tells a wrong key from a damaged value, and the column's name
is bound in as associated data, so a value moved to another column does not decrypt. Bytes
(`seal`/`unseal`) are kept the same way without the text envelope: key id (4 bytes), nonce (12),
ciphertext and tag, bound to a context of the caller's.
"""

from __future__ import annotations

import base64
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "obsdeco:v1:"
_KEY_ID_BYTES = 4
_NONCE_BYTES = 12


class EncryptionError(ValueError):
    """Stored content cannot be read: no key, another key, or a damaged value."""


def is_encrypted(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


class Cipher:
    """Encrypts and decrypts text with one 32-byte key."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        digest = hashlib.sha256(key).digest()
        self._key_id_raw = digest[:_KEY_ID_BYTES]
        self.key_id = self._key_id_raw.hex()

    def encrypt(self, text: str, column: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, text.encode(), column.encode())
        return f"{PREFIX}{self.key_id}:{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str, column: str) -> str:
        key_id, _, payload = token.removeprefix(PREFIX).partition(":")
        if key_id != self.key_id:
            raise EncryptionError(
                f"{column} was encrypted with another key (id {key_id}) than the configured "
                f"one (id {self.key_id}); configure the key it was written with"
            )
        raw = base64.b64decode(payload)
        try:
            return self._aead.decrypt(raw[:12], raw[12:], column.encode()).decode()
        except InvalidTag:
            raise EncryptionError(f"{column} failed authentication: the value is damaged") from None

    def seal(self, data: bytes, context: bytes) -> bytes:
        """`data` encrypted and authenticated, `context` bound in (it must be given to unseal)."""
        nonce = os.urandom(_NONCE_BYTES)
        return self._key_id_raw + nonce + self._aead.encrypt(nonce, data, context)

    def unseal(self, sealed: bytes, context: bytes) -> bytes:
        """The bytes `seal(data, context)` was given; EncryptionError for another key's value,
        a damaged one, or another context."""
        key_id = sealed[:_KEY_ID_BYTES]
        if key_id != self._key_id_raw:
            raise EncryptionError(
                f"the value was encrypted with another key (id {key_id.hex()}) than the "
                f"configured one (id {self.key_id})"
            )
        nonce = sealed[_KEY_ID_BYTES : _KEY_ID_BYTES + _NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, sealed[_KEY_ID_BYTES + _NONCE_BYTES :], context)
        except (InvalidTag, ValueError):
            raise EncryptionError("the value failed authentication: it is damaged") from None


def decrypt_or_explain(cipher: Cipher | None, token: str, column: str) -> str:
    if cipher is None:
        raise EncryptionError(
            f"{column} is encrypted in this store: configure(encryption_key=...) or set "
            "OBSDECO_ENCRYPTION_KEY to read it"
        )
    return cipher.decrypt(token, column)
