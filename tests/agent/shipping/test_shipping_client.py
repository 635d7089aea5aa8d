"""The transport's pure helpers: URLs, key redaction, headers, content types."""

from __future__ import annotations

import pytest
from sipstack_agent.config import REGION_HOSTS as CONFIG_REGION_HOSTS
from sipstack_agent.shipping import (
    AiohttpTransport,
    Response,
    Transport,
    TransportError,
    audio_content_type,
    build_headers,
    idempotency_key,
    normalize_api_url,
    recording_url_for,
    redact_key,
    redact_text,
    region_urls,
)
from sipstack_agent.shipping.client import REGION_HOSTS


@pytest.mark.parametrize(
    ("region", "calls", "recording"),
    [
        (
            "us1",
            "https://api-us1.sipstack.com/v1/mqs/connectors/asterisk/calls",
            "https://api-us1.sipstack.com/v1/mqs/recording",
        ),
        (
            "ca1",
            "https://api-ca1.sipstack.com/v1/mqs/connectors/asterisk/calls",
            "https://api-ca1.sipstack.com/v1/mqs/recording",  # never the dev host
        ),
        (
            "US2",
            "https://api-us2.sipstack.com/v1/mqs/connectors/asterisk/calls",
            "https://api-us2.sipstack.com/v1/mqs/recording",
        ),
        (
            "dev",
            "https://api-dev.sipstack.com/v1/mqs/connectors/asterisk/calls",
            "https://api-dev.sipstack.com/v1/mqs/recording",
        ),
    ],
)
def test_region_urls(region, calls, recording):
    assert region_urls(region) == (calls, recording)


def test_unknown_region_is_an_error_not_a_fallback():
    with pytest.raises(ValueError, match="eu1"):
        region_urls("eu1")


def test_region_table_matches_config():
    assert REGION_HOSTS == CONFIG_REGION_HOSTS


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://proxy.example.com/v1/mqs/connectors/asterisk",
            "https://proxy.example.com/v1/mqs/connectors/asterisk/calls",
        ),
        (
            "https://proxy.example.com/v1/mqs/connectors/asterisk/",
            "https://proxy.example.com/v1/mqs/connectors/asterisk/calls",
        ),
        (
            "http://127.0.0.1:8080/v1/mqs/connectors/asterisk/calls",
            "http://127.0.0.1:8080/v1/mqs/connectors/asterisk/calls",
        ),
        ("https://ingest.example.com/custom/path", "https://ingest.example.com/custom/path"),
    ],
)
def test_normalize_api_url(url, expected):
    assert normalize_api_url(url) == expected


@pytest.mark.parametrize("url", ["ftp://x.example.com/calls", "https:///calls", "not a url"])
def test_normalize_api_url_rejects_bad_urls(url):
    with pytest.raises(ValueError):
        normalize_api_url(url)


@pytest.mark.parametrize(
    ("calls", "recording"),
    [
        (
            "https://api-ca1.sipstack.com/v1/mqs/connectors/asterisk/calls",
            "https://api-ca1.sipstack.com/v1/mqs/recording",
        ),
        (
            "http://127.0.0.1:9000/prefix/v1/mqs/connectors/asterisk/calls",
            "http://127.0.0.1:9000/prefix/v1/mqs/recording",
        ),
        ("https://x.example.com/other", "https://x.example.com/v1/mqs/recording"),
    ],
)
def test_recording_url_for(calls, recording):
    assert recording_url_for(calls) == recording


def test_redact_key_keeps_only_the_last_four():
    key = "sk_" + "a" * 28 + "WXYZ"
    assert redact_key(key) == "sk_…WXYZ"
    assert redact_key("sk_t2_" + "b" * 26 + "1234") == "sk_…1234"
    assert redact_key("") == "<none>"
    assert "sk_1234" not in redact_key("sk_1234")  # short keys show nothing of the key
    text = f"rejected {key} and sk_t1_{'c' * 30}"
    red = redact_text(text, key)
    assert key not in red and "c" * 30 not in red
    assert red.count("sk_…") == 2


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
