"""SIPSTACK API URLs: region -> host, the two endpoints, overrides.

config/api.py computes `ApiSettings.url` and `ApiSettings.recording_url` once
with these; the shipper and the recording uploader post to what it computed.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

REGION_HOSTS: dict[str, str] = {
    "ca1": "api-ca1.sipstack.com",
    "us1": "api-us1.sipstack.com",
    "us2": "api-us2.sipstack.com",
    "dev": "api-dev.sipstack.com",
}
DEFAULT_REGION = "us1"
CALLS_PATH = "/v1/mqs/connectors/asterisk/calls"
RECORDING_PATH = "/v1/mqs/recording"
CONNECTOR_PATH_MARKER = "/v1/mqs/connectors/asterisk"
SIPSTACK_SUFFIX = ".sipstack.com"


DEFAULT_CALLS_URL = f"https://{REGION_HOSTS[DEFAULT_REGION]}{CALLS_PATH}"
DEFAULT_RECORDING_URL = f"https://{REGION_HOSTS[DEFAULT_REGION]}{RECORDING_PATH}"


def region_urls(region: str) -> tuple[str, str]:
    """(calls URL, recording URL) of a REGION; ValueError for an unknown one."""
    key = (region or "").strip().lower()
    host = REGION_HOSTS.get(key)
    if host is None:
        raise ValueError(f"unknown REGION {region!r}; expected one of {', '.join(REGION_HOSTS)}")
    return f"https://{host}{CALLS_PATH}", f"https://{host}{RECORDING_PATH}"


def with_calls_path(url: str) -> str:
    """An API_URL ending in the connector path gets `/calls` appended (the contract)."""
    parts = urlsplit(url)
    path = parts.path
    if CONNECTOR_PATH_MARKER in path and not path.rstrip("/").endswith("/calls"):
        path = path.rstrip("/") + "/calls"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def recording_url_for(calls_url: str) -> str:
    """The recording endpoint on the same host as a calls URL (`/v1/mqs/recording`).

    Any path prefix before `/v1/mqs/` is kept (proxies); a URL without
    `/v1/mqs/` gets the contract path on its host.
    """
    parts = urlsplit(calls_url)
    idx = parts.path.find("/v1/mqs/")
    prefix = parts.path[:idx] if idx >= 0 else ""
    return urlunsplit((parts.scheme, parts.netloc, prefix + RECORDING_PATH, "", ""))


def _is_sipstack(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host.endswith(SIPSTACK_SUFFIX)


def recording_url(calls_url: str, explicit: str, region: str) -> str:
    """Where recordings go, from the calls URL, RECORDING_API_URL and REGION.

    - an explicit recording URL outside *.sipstack.com (a proxy, the local
      receiver): as given;
    - a calls URL other than the built-in default (an API_URL override): the
      recording path on that host;
    - otherwise (the built-in default defers to REGION) the region's host.
    A sipstack recording URL of another host (the old connector sent ca1
    recordings to api-dev) is never used.
    """
    if explicit and urlsplit(explicit).hostname and not _is_sipstack(explicit):
        return explicit
    if calls_url and urlsplit(calls_url).hostname and calls_url != DEFAULT_CALLS_URL:
        return recording_url_for(calls_url)
    return region_urls(region or DEFAULT_REGION)[1]
