"""The API section: region, endpoint URLs, the key, timeouts (`ApiSettings`)."""

from __future__ import annotations

import ipaddress
import re
import string
from urllib.parse import urlsplit

from ..rules import api_urls
from ..rules.api_urls import REGION_HOSTS
from ..rules.redact import redact_key
from .reader import Reader
from .spec import Invalid, Notes, Table, boolean, integer, seconds, show, text
from .types import ApiSettings

_KEY_STANDARD_RE = re.compile(r"^sk_[A-Za-z0-9]{32}$")
_KEY_TIERED_RE = re.compile(r"^sk_t[0-4]_[A-Za-z0-9_]{8,}$")


def api_key_format(key: str) -> str:
    """'standard', 'tiered' or 'unknown' (the API is the authority on validity)."""
    if _KEY_STANDARD_RE.match(key):
        return "standard"
    if _KEY_TIERED_RE.match(key):
        return "tiered"
    return "unknown"


def _region(value: str, notes: Notes) -> str:
    region = value.lower()
    if region not in REGION_HOSTS:
        raise Invalid(f"unknown region {show(region)}; one of {', '.join(REGION_HOSTS)}")
    return region


_D = ApiSettings()

TABLE = Table("api")
API_KEY = TABLE.secret("API_KEY")
REGION = TABLE.var("REGION", _region, _D.region)
API_ALLOW_INSECURE_HTTP = TABLE.var("API_ALLOW_INSECURE_HTTP", boolean, _D.allow_insecure_http)
API_ENDPOINT = TABLE.var("API_ENDPOINT", text, "", "API_URL")  # API_URL: the old name
RECORDING_API_URL = TABLE.var("RECORDING_API_URL", text, "")
API_TIMEOUT = TABLE.var("API_TIMEOUT", seconds(hi=600), _D.timeout)
API_CONCURRENCY = TABLE.var("API_CONCURRENCY", integer(1, 256), _D.concurrency)
API_RETRY_HORIZON = TABLE.var("API_RETRY_HORIZON", seconds(hi=30 * 86400), _D.retry_horizon)


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _refuse_plain_http(r: Reader, name: str, value: str, allow: bool) -> bool:
    """http:// (key and calls in cleartext) only to loopback or with API_ALLOW_INSECURE_HTTP."""
    parts = urlsplit(value)
    if allow or parts.scheme.lower() != "http" or _is_loopback(parts.hostname):
        return False
    r.bad(
        name,
        f"http:// sends the API key and every call in cleartext to {parts.hostname}; use "
        f"https://, or set {API_ALLOW_INSECURE_HTTP.name}=true for a trusted network",
    )
    return True


def _calls_url(r: Reader, default: str, allow_http: bool) -> str:
    got = r.found(API_ENDPOINT)
    if got is None:
        return default
    name, value = got
    ok = True
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        ok = False
        parts = urlsplit("")
    if not ok or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        r.bad(name, f"must be an http:// or https:// URL with a host, got {show(value)}")
    elif parts.username or parts.password:
        r.bad(name, f"must not contain credentials; the key goes in {API_KEY.name}")
    elif any(c.isspace() for c in value):
        r.bad(name, "must not contain whitespace")
    elif not _refuse_plain_http(r, name, value, allow_http):
        return api_urls.with_calls_path(value)
    return default


def _recording_url(r: Reader, allow_http: bool) -> str:
    got = r.found(RECORDING_API_URL)
    if got is None:
        return ""
    name, value = got
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        r.bad(name, f"must be an http:// or https:// URL with a host, got {show(value)}")
    elif not _refuse_plain_http(r, name, value, allow_http):
        return value
    return ""


def _check_key(r: Reader, api_key: str) -> None:
    name = API_KEY.name
    if not api_key:
        r.bad(name, f"required (or {name}_FILE): the SIPSTACK API key, sk_...")
    elif any(not (c in string.printable and not c.isspace()) for c in api_key):
        r.bad(
            name,
            "contains whitespace, control or non-ASCII characters; "
            "it cannot be sent in an HTTP header (value not shown)",
        )
    elif api_key_format(api_key) == "unknown":
        r.warn(
            f"{name}: {redact_key(api_key)} does not look like sk_ + 32 characters or a tiered "
            "sk_t<0-4>_ key; using it anyway (the API decides; run `sipstack-agent check`)"
        )


def load(r: Reader, api_key: str) -> ApiSettings:
    region = r.get(REGION)
    allow_http = r.get(API_ALLOW_INSECURE_HTTP)
    calls_url = _calls_url(r, api_urls.region_urls(region)[0], allow_http)
    recording_url = api_urls.recording_url(calls_url, _recording_url(r, allow_http), region)
    _check_key(r, api_key)
    return ApiSettings(
        url=calls_url,
        recording_url=recording_url,
        api_key=api_key,
        region=region,
        timeout=r.get(API_TIMEOUT),
        concurrency=r.get(API_CONCURRENCY),
        retry_horizon=r.get(API_RETRY_HORIZON),
        allow_insecure_http=allow_http,
    )
