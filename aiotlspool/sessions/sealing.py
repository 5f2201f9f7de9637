"""Sealing entries for a store shared beyond this process: authenticated, optionally encrypted.

A stored session holds the keys to its connection's traffic, and a resumed handshake skips
certificate verification: an entry a store hands back must be one this application wrote, for
the key it is read under. :class:`EntrySealer` seals an entry's bytes with HMAC-SHA256 under a
secret key, binding them to *associated* bytes the caller names (a store passes the
:meth:`~aiotlspool.SessionKey.store_id`, so an entry copied under another key fails), and can
also encrypt them (AES-256-GCM, with the optional ``cryptography`` package).

Rotation: one key signs (and one encrypts); entries signed (or encrypted) with any of the older
``verification_keys`` (``decryption_keys``) are still accepted, so processes can move to a new
key one at a time. Each key is named in the entry by an 8-byte id derived from it.

Format (version 1), all of it covered by the MAC::

    b"ATPS" | version (1 byte) | flags (1 byte: 1 = encrypted) | MAC key id (8 bytes)
    [encrypted: encryption key id (8 bytes) | salt (16 bytes)]
    body (the payload, or its AES-256-GCM ciphertext and tag)
    HMAC-SHA256(mac key, header | len(associated) (4 bytes, big-endian) | associated | body)

Encryption uses a key derived per entry from the encryption key and the entry's random salt
(so no nonce is ever repeated under one key), the header and the associated bytes as
associated data, and is checked after the MAC (encrypt-then-MAC).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Iterable
from typing import Any

__all__ = ["MIN_KEY_BYTES", "EntrySealer", "SealError"]

MIN_KEY_BYTES = 32
_MAGIC = b"ATPS"
_VERSION = 1
_ENCRYPTED = 0x01
_ID_BYTES = 8
_SALT_BYTES = 16
_MAC_BYTES = 32
_PLAIN_HEADER = len(_MAGIC) + 2 + _ID_BYTES
_NONCE = bytes(12)  # each entry has its own key (from its salt): a fixed nonce is safe


class SealError(ValueError):
    """An entry that must not be used. ``reason`` says why:

    - ``"corrupt"``: not a sealed entry of a known version (truncated, garbage);
    - ``"foreign"``: sealed (or encrypted) with a key this sealer does not know;
    - ``"tampered"``: the MAC (or the encryption tag) does not match: changed bytes, or an
      entry copied under other associated data (another session key).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _checked_key(name: str, key: object) -> bytes:
    if not isinstance(key, (bytes, bytearray)):
        raise TypeError(f"{name} must be bytes, got {type(key).__name__}")
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"{name} must be at least {MIN_KEY_BYTES} random bytes, got {len(key)} "
            "(make one with secrets.token_bytes(32))"
        )
    return bytes(key)


def _derive(key: bytes, label: bytes) -> bytes:
    return hmac.digest(key, b"aiotlspool entry sealing v1: " + label, "sha256")


def key_id(key: bytes) -> bytes:
    """The 8-byte id that names ``key`` in sealed entries (reveals nothing usable about it)."""
    return _derive(key, b"key id")[:_ID_BYTES]


def _aesgcm() -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:
        raise ImportError(
            "encrypting session store entries needs the 'cryptography' package "
            "(pip install 'aiotlspool[encryption]')",
            name="cryptography",
        ) from exc
    return AESGCM


class EntrySealer:
    """Seals and opens a store's entries.

    Args:
        signing_key: the secret that signs new entries (HMAC-SHA256), at least 32 bytes. Every
            process sharing a store needs it (or one of its ``verification_keys``).
        verification_keys: older signing keys whose entries are still accepted (rotation).
        encryption_key: when given, new entries are also encrypted (AES-256-GCM); needs the
            ``cryptography`` package (the ``encryption`` extra).
        decryption_keys: older encryption keys whose entries can still be read.

    Keys are used through labelled derivations, so the same bytes may serve as signing and
    encryption key without the two uses mixing.
    """

    def __init__(
        self,
        signing_key: bytes,
        *,
        verification_keys: Iterable[bytes] = (),
        encryption_key: bytes | None = None,
        decryption_keys: Iterable[bytes] = (),
    ) -> None:
        signing = _checked_key("signing_key", signing_key)
        self._mac_keys = {key_id(signing): _derive(signing, b"mac")}
        self._signing_id = key_id(signing)
        for old in verification_keys:
            checked = _checked_key("each of verification_keys", old)
            self._mac_keys.setdefault(key_id(checked), _derive(checked, b"mac"))
        self._encryption_keys: dict[bytes, bytes] = {}
        self._encryption_id: bytes | None = None
        if encryption_key is not None:
            encrypting = _checked_key("encryption_key", encryption_key)
            self._encryption_id = key_id(encrypting)
            self._encryption_keys[self._encryption_id] = _derive(encrypting, b"encryption")
        for old in decryption_keys:
            checked = _checked_key("each of decryption_keys", old)
            self._encryption_keys.setdefault(key_id(checked), _derive(checked, b"encryption"))
        # Fails now, naming the extra, rather than at the first entry.
        self._aead_class = _aesgcm() if self._encryption_keys else None

    @property
    def encrypts(self) -> bool:
        """Whether new entries are encrypted (an encryption key was given)."""
        return self._encryption_id is not None

    def seal(self, payload: bytes, associated: bytes = b"") -> bytes:
        """The sealed entry for ``payload``, bound to ``associated``."""
        if self._encryption_id is None:
            header = struct.pack("!4sBB", _MAGIC, _VERSION, 0) + self._signing_id
            body = payload
        else:
            salt = os.urandom(_SALT_BYTES)
            header = (
                struct.pack("!4sBB", _MAGIC, _VERSION, _ENCRYPTED)
                + self._signing_id
                + self._encryption_id
                + salt
            )
            body = self._aead(self._encryption_id, salt).encrypt(
                _NONCE, payload, header + associated
            )
        mac = self._mac(self._mac_keys[self._signing_id], header, associated, body)
        return header + body + mac

    def open(self, sealed: bytes, associated: bytes = b"") -> bytes:
        """The payload of a sealed entry bound to ``associated``; :class:`SealError` if it
        is not one this sealer may accept."""
        data = bytes(sealed)
        if len(data) < _PLAIN_HEADER + _MAC_BYTES or data[:4] != _MAGIC:
            raise SealError("corrupt", "not a sealed aiotlspool entry")
        version, flags = data[4], data[5]
        if version != _VERSION or flags & ~_ENCRYPTED:
            raise SealError("corrupt", f"unsupported sealed entry version {version}.{flags}")
        header_size = _PLAIN_HEADER
        if flags & _ENCRYPTED:
            header_size += _ID_BYTES + _SALT_BYTES
        if len(data) < header_size + _MAC_BYTES:
            raise SealError("corrupt", "truncated sealed entry")
        header, body, mac = data[:header_size], data[header_size:-_MAC_BYTES], data[-_MAC_BYTES:]
        mac_key = self._mac_keys.get(header[6:_PLAIN_HEADER])
        if mac_key is None:
            raise SealError("foreign", "entry signed with a key this store does not know")
        if not hmac.compare_digest(self._mac(mac_key, header, associated, body), mac):
            raise SealError("tampered", "entry MAC does not match (changed or moved)")
        if not flags & _ENCRYPTED:
            return body
        enc_id, salt = header[_PLAIN_HEADER : _PLAIN_HEADER + _ID_BYTES], header[-_SALT_BYTES:]
        if enc_id not in self._encryption_keys:
            raise SealError("foreign", "entry encrypted with a key this store does not know")
        try:
            plain: bytes = self._aead(enc_id, salt).decrypt(_NONCE, body, header + associated)
        except Exception:  # cryptography's InvalidTag
            raise SealError("tampered", "entry does not decrypt") from None
        return plain

    def _aead(self, enc_id: bytes, salt: bytes) -> Any:
        assert self._aead_class is not None
        return self._aead_class(hmac.digest(self._encryption_keys[enc_id], salt, "sha256"))

    @staticmethod
    def _mac(key: bytes, header: bytes, associated: bytes, body: bytes) -> bytes:
        mac = hmac.new(key, header, hashlib.sha256)
        mac.update(struct.pack("!I", len(associated)))
        mac.update(associated)
        mac.update(body)
        return mac.digest()

    def __repr__(self) -> str:  # never the keys
        return (
            f"<EntrySealer signs with {self._signing_id.hex()}, verifies {len(self._mac_keys)} "
            f"key(s), encrypts={self.encrypts}>"
        )
