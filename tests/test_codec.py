"""The payload codec (core.codec) and the codec server (/codec): AES-GCM with key ids and
rotation, keys from settings or a key file; the server decodes for a token holder, refuses
anyone else, answers the Temporal UI's CORS preflight and keeps a UI session by cookie."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.contrib.pydantic import pydantic_data_converter

from core import codec as codec_module
from core.codec import (
    ENCODING,
    ENCODING_ZLIB,
    ENCODINGS,
    KEY_ID,
    CodecError,
    EncryptionCodec,
    codec_from_settings,
    data_converter,
    load_keys,
)
from core.config import ConfigError, load_settings
from core.models import RefundRequest
from tests.api_support import api_settings, app_with, http

K1 = base64.b64encode(b"1" * 32).decode()
K2 = base64.b64encode(b"2" * 32).decode()
UI = "http://localhost:8080"


def request() -> RefundRequest:
    return RefundRequest(request_id="r1", customer_email="lee@example.com", charge_id="ch_1",
                         reason="other", message="my secret message")


async def encoded(codec: EncryptionCodec) -> Payload:
    converter = data_converter(codec)
    [payload] = await converter.encode([request()])
    return payload


async def test_payloads_are_encrypted_with_the_active_key_and_decode_back():
    codec = EncryptionCodec({"k1": base64.b64decode(K1)}, "k1")
    payload = await encoded(codec)
    assert payload.metadata["encoding"] in ENCODINGS and payload.metadata[KEY_ID] == b"k1"
    assert b"lee@example.com" not in payload.SerializeToString()
    [back] = await data_converter(codec).decode([payload], [RefundRequest])
    assert back == request()


async def test_a_payload_that_compresses_is_stored_compressed_and_decodes_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    codec = EncryptionCodec({"k1": base64.b64decode(K1)}, "k1")
    [plain] = await pydantic_data_converter.encode([request()])
    packed = codec.encrypt(plain)
    monkeypatch.setattr(codec_module, "COMPRESS_FROM", 10**9)
    unpacked = codec.encrypt(plain)  # as the codec before compression wrote it
    assert packed.metadata["encoding"] == ENCODING_ZLIB
    assert unpacked.metadata["encoding"] == ENCODING
    assert len(packed.data) < len(unpacked.data)
    assert codec.decrypt(packed) == plain == codec.decrypt(unpacked)


async def test_a_short_payload_is_not_compressed() -> None:
    codec = EncryptionCodec({"k1": base64.b64decode(K1)}, "k1")
    [plain] = await pydantic_data_converter.encode(["ok"])
    sealed = codec.encrypt(plain)
    assert sealed.metadata["encoding"] == ENCODING and codec.decrypt(sealed) == plain


async def test_a_compressed_payload_inflates_only_up_to_the_limit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    codec = EncryptionCodec({"k1": base64.b64decode(K1)}, "k1")
    sealed = codec.encrypt(Payload(metadata={"encoding": b"json/plain"}, data=b"0" * 100_000))
    assert sealed.metadata["encoding"] == ENCODING_ZLIB and len(sealed.data) < 1_000
    monkeypatch.setattr(codec_module, "MAX_PLAIN_BYTES", 50_000)
    with pytest.raises(CodecError, match="larger than 50000 bytes"):
        codec.decrypt(sealed)


async def test_rotation_old_payloads_still_decode_new_ones_use_the_new_key():
    old = EncryptionCodec({"k1": base64.b64decode(K1)}, "k1")
    rotated = EncryptionCodec({"k1": base64.b64decode(K1), "k2": base64.b64decode(K2)}, "k2")
    before = await encoded(old)
    after = await encoded(rotated)
    assert after.metadata[KEY_ID] == b"k2"
    assert (await rotated.decode([before]))[0] == (await rotated.decode([after]))[0]
    with pytest.raises(CodecError, match=r"'k2'.*not loaded"):
        await old.decode([after])  # a process that does not have the new key yet


async def test_plain_payloads_pass_through_and_tampering_is_refused():
    codec = EncryptionCodec({"k1": base64.b64decode(K1)}, "k1")
    [plain] = await pydantic_data_converter.encode([request()])
    assert (await codec.decode([plain]))[0] == plain  # histories from before encryption
    payload = await encoded(codec)
    tampered = Payload(metadata=payload.metadata, data=payload.data[:-1] + b"x")
    with pytest.raises(CodecError, match="does not decrypt"):
        await codec.decode([tampered])
    relabelled = Payload(metadata={**payload.metadata, KEY_ID: b"k2"}, data=payload.data)
    same_key = EncryptionCodec({"k1": base64.b64decode(K1), "k2": base64.b64decode(K1)}, "k1")
    with pytest.raises(CodecError):  # the key id is authenticated
        await same_key.decode([relabelled])


def test_keys_from_settings_and_key_file(tmp_path: Path):
    key_file = tmp_path / "keys.json"
    key_file.write_text(json.dumps({"2026-10": K1}))
    keys, active = load_keys(load_settings(
        PAYLOAD_ENCRYPTION_KEY_FILE=key_file, PAYLOAD_ENCRYPTION_KEYS={"2026-11": K2},
        PAYLOAD_ENCRYPTION_KEY_ID="2026-11"))
    assert set(keys) == {"2026-10", "2026-11"} and active == "2026-11"
    keys, active = load_keys(load_settings())
    assert active == "dev-1"  # development default


@pytest.mark.parametrize(("over", "says"), [
    ({"PAYLOAD_ENCRYPTION_KEYS": {"a": K1, "b": K2}}, "PAYLOAD_ENCRYPTION_KEY_ID: missing"),
    ({"PAYLOAD_ENCRYPTION_KEYS": {"a": K1}, "PAYLOAD_ENCRYPTION_KEY_ID": "b"}, "'b' is not"),
    ({"PAYLOAD_ENCRYPTION_KEYS": {"a": "c2hvcnQ="}}, "has 5 bytes"),
    ({"PAYLOAD_ENCRYPTION_KEYS": {"a": "not base64!"}}, "not base64"),
])
def test_bad_keys_are_named(over, says):
    with pytest.raises(ConfigError) as err:
        codec_from_settings(load_settings(**over))
    assert "PAYLOAD_ENCRYPTION_KEY" in str(err.value) and says in str(err.value)


def test_a_key_file_that_disagrees_with_the_settings_is_refused(tmp_path: Path):
    key_file = tmp_path / "keys.json"
    key_file.write_text(json.dumps({"a": K1}))
    with pytest.raises(ConfigError, match="differs"):
        load_keys(load_settings(PAYLOAD_ENCRYPTION_KEY_FILE=key_file,
                                PAYLOAD_ENCRYPTION_KEYS={"a": K2}))
    key_file.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        load_keys(load_settings(PAYLOAD_ENCRYPTION_KEY_FILE=key_file))


# --- the codec server --------------------------------------------------------------------


def codec_api(**over):  # type: ignore[no-untyped-def]
    settings = api_settings(CODEC_CORS_ORIGINS=[UI], **over)
    return settings, http(app_with(object(), settings))


def body_of(*payloads: Payload) -> dict:
    return json_format.MessageToDict(Payloads(payloads=payloads))


async def test_the_codec_server_decodes_for_a_token_holder_only():
    settings, client = codec_api()
    payload = await encoded(codec_from_settings(settings))
    async with client as api:
        ok = await api.post("/codec/decode", json=body_of(payload),
                            headers={"Authorization": "Bearer tok-vic", "X-Namespace": "default"})
        anonymous = await api.post("/codec/decode", json=body_of(payload))
        wrong = await api.post("/codec/decode", json=body_of(payload),
                               headers={"Authorization": "Bearer nope"})
    assert ok.status_code == 200, ok.text
    [decoded] = json_format.ParseDict(ok.json(), Payloads()).payloads
    assert json.loads(decoded.data)["customer_email"] == "lee@example.com"
    for refused in (anonymous, wrong):
        assert refused.status_code == 401 and "lee@" not in refused.text


async def test_the_codec_server_encodes_and_refuses_garbage():
    settings, client = codec_api()
    [plain] = await pydantic_data_converter.encode([request()])
    async with client as api:
        enc = await api.post("/codec/encode", json=body_of(plain),
                             headers={"Authorization": "Bearer tok-alice"})
        bad = await api.post("/codec/decode", content=b"{not json",
                             headers={"Authorization": "Bearer tok-alice"})
        unknown_key = Payload(metadata={"encoding": ENCODING, KEY_ID: b"gone"}, data=b"x" * 40)
        undecodable = await api.post("/codec/decode", json=body_of(unknown_key),
                                     headers={"Authorization": "Bearer tok-alice"})
    [sealed] = json_format.ParseDict(enc.json(), Payloads()).payloads
    assert sealed.metadata["encoding"] in ENCODINGS
    assert (await codec_from_settings(settings).decode([sealed]))[0] == plain
    assert bad.status_code == 400
    assert undecodable.status_code == 422 and "'gone'" in undecodable.json()["detail"]


async def test_the_temporal_ui_preflight_is_answered_for_its_origin_only():
    _, client = codec_api()
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type,x-namespace,authorization"}
    async with client as api:
        ok = await api.options("/codec/decode", headers={"Origin": UI, **preflight})
        other = await api.options("/codec/decode",
                                  headers={"Origin": "https://evil.example", **preflight})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == UI
    assert ok.headers["access-control-allow-credentials"] == "true"
    allowed = ok.headers["access-control-allow-headers"].lower()
    assert {"authorization", "content-type", "x-namespace"} <= {
        h.strip() for h in allowed.split(",")}
    assert "access-control-allow-origin" not in other.headers


async def test_a_ui_session_cookie_decodes_until_the_token_is_removed():
    settings, client = codec_api()
    payload = await encoded(codec_from_settings(settings))
    async with client as api:
        form = await api.get("/codec/session")
        assert form.status_code == 200 and 'name="token"' in form.text
        refused = await api.post("/codec/session", data={"token": "guess"})
        assert refused.status_code == 401 and "set-cookie" not in refused.headers
        signed_in = await api.post("/codec/session", data={"token": "tok-bob"})
        assert signed_in.status_code == 200
        cookie = signed_in.headers["set-cookie"]
        assert "HttpOnly" in cookie and "Path=/codec" in cookie and "tok-bob" not in cookie
        decoded = await api.post("/codec/decode", json=body_of(payload),
                                 headers={"Origin": UI})
        assert decoded.status_code == 200
        assert decoded.headers["access-control-allow-origin"] == UI
        api.cookies.set("refund_desk_codec", signed_in.cookies["refund_desk_codec"] + "0",
                        path="/codec")
        forged = await api.post("/codec/decode", json=body_of(payload))
        assert forged.status_code == 401
    # Removing bob's token ends his sessions.
    settings, client = codec_api(AGENT_TOKENS={"tok-alice": {"agent": "alice"}})
    async with client as api:
        api.cookies.set("refund_desk_codec", signed_in.cookies["refund_desk_codec"],
                        path="/codec")
        after = await api.post("/codec/decode", json=body_of(payload))
    assert after.status_code == 401
