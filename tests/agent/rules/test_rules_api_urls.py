"""rules.api_urls: region -> host, the two endpoints, and what config computes from them."""

from __future__ import annotations

import pytest
from sipstack_agent.config import ApiSettings, ConfigError, load_settings
from sipstack_agent.rules.api_urls import (
    REGION_HOSTS,
    recording_url,
    recording_url_for,
    region_urls,
    with_calls_path,
)

KEY = "sk_" + "A1b2C3d4" * 4
CA1_CALLS = "https://api-ca1.sipstack.com/v1/mqs/connectors/asterisk/calls"
CA1_REC = "https://api-ca1.sipstack.com/v1/mqs/recording"
US1_CALLS = "https://api-us1.sipstack.com/v1/mqs/connectors/asterisk/calls"
US1_REC = "https://api-us1.sipstack.com/v1/mqs/recording"


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
def test_with_calls_path(url, expected):
    assert with_calls_path(url) == expected


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


@pytest.mark.parametrize(
    ("calls", "explicit", "region", "expected"),
    [
        (US1_CALLS, "", "us1", US1_REC),
        (US1_CALLS, "", "ca1", CA1_REC),  # the built-in default calls URL defers to REGION
        (CA1_CALLS, "", "ca1", CA1_REC),
        # a stale sipstack recording URL of another host is never used (old connector's bug)
        (CA1_CALLS, "https://api-dev.sipstack.com/v1/mqs/recording", "ca1", CA1_REC),
        (US1_CALLS, "https://api-dev.sipstack.com/v1/mqs/recording", "dev",
         "https://api-dev.sipstack.com/v1/mqs/recording"),
        ("http://127.0.0.1:9999/v1/mqs/connectors/asterisk/calls", "", "us1",
         "http://127.0.0.1:9999/v1/mqs/recording"),
        (US1_CALLS, "https://proxy.example.net/rec", "us1", "https://proxy.example.net/rec"),
    ],
)  # fmt: skip
def test_recording_url_table(calls: str, explicit: str, region: str, expected: str) -> None:
    assert recording_url(calls, explicit, region) == expected


def _api(**env: str) -> ApiSettings:
    return load_settings({"API_KEY": KEY, "DB_TYPE": "postgresql", "DB_NAME": "a", **env}).api


@pytest.mark.parametrize(
    ("env", "calls", "recording"),
    [
        ({}, US1_CALLS, US1_REC),
        ({"REGION": "ca1"}, CA1_CALLS, CA1_REC),
        # config used to keep a sipstack RECORDING_API_URL as given while the uploader
        # sent elsewhere; decided: the uploader's rule, computed once here
        ({"REGION": "ca1", "RECORDING_API_URL": "https://api-dev.sipstack.com/v1/mqs/recording"},
         CA1_CALLS, CA1_REC),
        ({"API_URL": "http://127.0.0.1:9000/p/v1/mqs/connectors/asterisk"},
         "http://127.0.0.1:9000/p/v1/mqs/connectors/asterisk/calls",
         "http://127.0.0.1:9000/p/v1/mqs/recording"),
        ({"RECORDING_API_URL": "https://proxy.example.net/rec"}, US1_CALLS,
         "https://proxy.example.net/rec"),
    ],
)  # fmt: skip
def test_config_computes_both_urls_once(env: dict[str, str], calls: str, recording: str) -> None:
    api = _api(**env)
    assert (api.url, api.recording_url) == (calls, recording)


def test_every_region_of_the_table_loads() -> None:
    for region, host in REGION_HOSTS.items():
        api = _api(REGION=region)
        assert api.url == f"https://{host}/v1/mqs/connectors/asterisk/calls"
        assert api.recording_url == f"https://{host}/v1/mqs/recording"
    with pytest.raises(ConfigError, match="REGION"):
        _api(REGION="eu1")
