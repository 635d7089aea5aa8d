"""The transport's pure helpers: headers, content types (URLs and redaction: tests/agent/rules)."""

from __future__ import annotations

import pytest
from sipstack_agent.shipping import (
    AiohttpTransport,
    Response,
    Transport,
    TransportError,
    audio_content_type,
    build_headers,
    idempotency_key,
)


def test_build_headers_of_the_contract():
    h = build_headers("sk_" + "k" * 32, version="0.14.0", idempotency_key="pbx1:1.1:2")
    assert h == {
        "Authorization": "Bearer sk_" + "k" * 32,
        "User-Agent": "sipstack-connector-asterisk/0.14.0",
        "Accept": "application/json",
        "Content-Type": "application/json",
        "Idempotency-Key": "pbx1:1.1:2",
    }
    multipart = build_headers("sk_x", content_type=None)
    assert "Content-Type" not in multipart and "Idempotency-Key" not in multipart
    assert multipart["User-Agent"].startswith("sipstack-connector-asterisk/")


def test_idempotency_key_format():
    assert idempotency_key("pbx1", "1700000000.12", 3) == "pbx1:1700000000.12:3"


@pytest.mark.parametrize(
    ("name", "ctype"),
    [
        ("a.wav", "audio/wav"),
        ("a.WAV", "audio/wav"),
        ("a.mp3", "audio/mpeg"),
        ("a.gsm", "audio/gsm"),
        ("a.ogg", "audio/ogg"),
        ("a.bin", "application/octet-stream"),
    ],
)
def test_audio_content_type(name, ctype):
    assert audio_content_type(f"/var/spool/asterisk/monitor/{name}") == ctype


def test_response_header_lookup_is_case_insensitive_and_ok_is_the_contracts_2xx():
    r = Response(429, {"retry-after": "3"}, "")
    assert r.header("Retry-After") == "3"
    assert r.header("X-Missing") is None
    assert [Response(s).ok for s in (200, 201, 202, 204, 400)] == [True, True, True, False, False]


def test_transport_error_reason_labels():
    assert TransportError("x", timeout=True).reason == "timeout"
    assert TransportError("x").reason == "connection"


def test_aiohttp_transport_implements_the_protocol():
    t = AiohttpTransport(timeout=3)
    assert isinstance(t, Transport)
    with pytest.raises(ValueError):
        AiohttpTransport(timeout=0)
