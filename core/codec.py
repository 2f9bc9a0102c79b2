"""Customer data encrypted in Temporal's history: a payload codec with AES-GCM.

Every payload a client or worker of Refund Desk writes (workflow input, signal and update
arguments, activity inputs and results, query answers, memos, summaries, failure messages)
is serialized, compressed when that makes it shorter, then encrypted here before it
leaves the process; Temporal stores only `binary/encrypted` (or, compressed first,
`binary/encrypted-zlib`) payloads that carry the id of their key in the metadata
(`encryption-key-id`). This codec decodes both; the version before compression reads
only the first, so deploy this one to every worker, API and codec server together (a task
that meets a payload it cannot read fails and is retried). Several keys can be loaded at
once: the active one (PAYLOAD_ENCRYPTION_KEY_ID) encrypts, any known one decrypts, so a
key is rotated by adding a new one, making it active, and removing the old one once no
open case and no history you still need reads it.

A payload that is not encrypted (histories written before encryption was on) is decoded
as it is. A payload whose key is unknown fails with the key id named.

Search attributes, workflow ids, task queues and failure types are not payloads of the
codec: keep customer data out of them (core.customer_ref)."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

from core.config import DEV_PAYLOAD_KEY, DEV_PAYLOAD_KEY_ID, ConfigError, Settings

ENCODING = b"binary/encrypted"
# The same, over the payload compressed first (zlib): written when that is shorter. Every
# byte of a history is stored, replayed and decoded for the weeks a case lives (issue 12).
ENCODING_ZLIB = b"binary/encrypted-zlib"
ENCODINGS = (ENCODING, ENCODING_ZLIB)
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12
COMPRESS_FROM = 96  # bytes of serialized payload: below this zlib rarely saves anything
# An 8 KiB window and less memory than zlib's defaults: setting up the defaults' 256 KiB
# took 50 of a small payload's 60 microseconds (a few KiB is the usual payload; a 70 KiB
# case state packs 2 % larger). Any zlib reader inflates it (the window is in the header).
ZLIB_WINDOW_BITS = 13
ZLIB_MEMORY_LEVEL = 6
MAX_PLAIN_BYTES = 8 * 1024 * 1024  # above Temporal's 2 MB payload limit: no zip bomb
_KEY_SIZES = (16, 24, 32)


class CodecError(ValueError):
    """A payload cannot be decrypted (unknown key id, or the data was altered)."""


class EncryptionCodec(PayloadCodec):
    """AES-GCM over each serialized payload; the key id is also authenticated data, so a
    payload cannot be passed off as encrypted under another key."""

    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        if active not in keys:
            raise ValueError(f"active key {active!r} is not among the keys")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.active = active

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._ciphers)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        key_id = self.active.encode()
        plain, encoding = payload.SerializeToString(), ENCODING
        if len(plain) >= COMPRESS_FROM:
            packer = zlib.compressobj(6, zlib.DEFLATED, ZLIB_WINDOW_BITS, ZLIB_MEMORY_LEVEL)
            packed = packer.compress(plain) + packer.flush()
            if len(packed) < len(plain):
                plain, encoding = packed, ENCODING_ZLIB
        sealed = self._ciphers[self.active].encrypt(nonce, plain, key_id)
        return Payload(metadata={"encoding": encoding, KEY_ID: key_id}, data=nonce + sealed)

    def decrypt(self, payload: Payload) -> Payload:
        encoding = payload.metadata.get("encoding")
        if encoding not in ENCODINGS:
            return payload  # written before encryption, or by a client without the codec
        key_id = payload.metadata.get(KEY_ID, b"").decode("utf-8", "replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise CodecError(f"payload encrypted with key {key_id!r}, which is not loaded "
                             f"(PAYLOAD_ENCRYPTION_KEYS has {', '.join(self.key_ids)})")
        data = payload.data
        try:
            plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], key_id.encode())
        except InvalidTag:
            raise CodecError(f"payload under key {key_id!r} does not decrypt (altered, or "
                             "a different key with the same id)") from None
        if encoding == ENCODING_ZLIB:
            plain = _inflate(plain)
        return Payload.FromString(plain)


def _inflate(packed: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        plain = inflater.decompress(packed, MAX_PLAIN_BYTES)
    except zlib.error as exc:
        raise CodecError(f"compressed payload does not inflate: {exc}") from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise CodecError(f"compressed payload is larger than {MAX_PLAIN_BYTES} bytes or cut")
    return plain


def load_keys(settings: Settings) -> tuple[dict[str, bytes], str]:
    """(key id -> key bytes, active id) from PAYLOAD_ENCRYPTION_KEYS and the key file;
    the development key when neither is set. ConfigError names what is wrong."""
    raw: dict[str, str] = {}
    if settings.PAYLOAD_ENCRYPTION_KEY_FILE:
        raw.update(_key_file(settings.PAYLOAD_ENCRYPTION_KEY_FILE))
    for key_id, secret in settings.PAYLOAD_ENCRYPTION_KEYS.items():
        value = secret.get_secret_value()
        if raw.get(key_id, value) != value:
            raise ConfigError(f"PAYLOAD_ENCRYPTION_KEYS: key {key_id!r} differs from the one "
                              "of the same id in PAYLOAD_ENCRYPTION_KEY_FILE")
        raw[key_id] = value
    if not raw:
        raw = {DEV_PAYLOAD_KEY_ID: DEV_PAYLOAD_KEY}
    keys = {key_id: _key_bytes(key_id, value) for key_id, value in raw.items()}
    active = settings.PAYLOAD_ENCRYPTION_KEY_ID
    if active is None:
        if len(keys) > 1:
            raise ConfigError("PAYLOAD_ENCRYPTION_KEY_ID: missing (several keys are loaded: "
                              f"{', '.join(sorted(keys))}; name the one that encrypts)")
        active = next(iter(keys))
    if active not in keys:
        raise ConfigError(f"PAYLOAD_ENCRYPTION_KEY_ID: {active!r} is not a loaded key "
                          f"({', '.join(sorted(keys))})")
    return keys, active


def _key_file(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"PAYLOAD_ENCRYPTION_KEY_FILE: cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ConfigError(f"PAYLOAD_ENCRYPTION_KEY_FILE: {path} must be a JSON object "
                          '{"<key id>": "<base64 key>", ...}')
    return data


def _key_bytes(key_id: str, value: str) -> bytes:
    if not key_id or not key_id.isascii() or not key_id.isprintable():
        raise ConfigError(f"PAYLOAD_ENCRYPTION_KEYS: key id {key_id!r} must be printable ASCII")
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"PAYLOAD_ENCRYPTION_KEYS: key {key_id!r} is not base64") from None
    if len(key) not in _KEY_SIZES:
        raise ConfigError(f"PAYLOAD_ENCRYPTION_KEYS: key {key_id!r} has {len(key)} bytes; AES "
                          "needs 16, 24 or 32 (e.g. `openssl rand -base64 32`)")
    return key


def codec_from_settings(settings: Settings) -> EncryptionCodec:
    keys, active = load_keys(settings)
    return EncryptionCodec(keys, active)


def development_codec() -> EncryptionCodec:
    """The codec of the development key (the local stack, the tests, and the recorded
    encrypted histories under tests/histories)."""
    return EncryptionCodec({DEV_PAYLOAD_KEY_ID: base64.b64decode(DEV_PAYLOAD_KEY)},
                           DEV_PAYLOAD_KEY_ID)


def data_converter(codec: PayloadCodec | None) -> DataConverter:
    """The pydantic converter every Refund Desk client uses, with the codec; failure
    messages and stack traces are moved into encoded (so encrypted) attributes, since an
    error text can quote customer data."""
    if codec is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
