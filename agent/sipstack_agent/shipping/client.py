"""The HTTP transport to the SIPSTACK API, behind a two-method interface.

`Transport` is what the shipper and the recording uploader code against;
tests swap it for a fake. `AiohttpTransport` is the real one: one
`aiohttp.ClientSession` per agent (keep-alive, bounded connection pool), JSON
bodies posted as given, multipart bodies streamed from disk (the text fields
first, the audio part last) so a 500 MB recording costs constant memory.

Connection errors and timeouts raise `TransportError`; every HTTP answer,
whatever its status, is a `Response`. At most `MAX_RESPONSE_BYTES` of an
answer's body are read, counted after gzip/deflate decoding (the agent
decodes itself so a compressed bomb is cut at the same size); the rest is
left unread and the connection closed. Classification (success / retry / dead
letter) is the caller's job (see `shipping/outbox.py`).

Also here: the request headers of the ingest contract
(../shared/spec/ingest-api.md). URLs and key redaction live in `rules/`.
"""

from __future__ import annotations

import asyncio
import codecs
import functools
import os
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import aiohttp
from aiohttp.helpers import ProxyInfo, proxies_from_env

from sipstack_agent import __version__
from sipstack_agent.calls.document import revision_key

USER_AGENT_PRODUCT = "sipstack-connector-asterisk"

AUDIO_CONTENT_TYPES: dict[str, str] = {
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".gsm": "audio/gsm",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
}

# Lowest upload rate we tolerate before giving up on a multipart request
# (bytes/s); the multipart deadline is timeout + size / this.
MIN_UPLOAD_RATE = 256 * 1024

# Bytes of an answer's body read at most (after decoding): the API answers with
# small JSON; anything longer is cut (Response.truncated) and never buffered.
MAX_RESPONSE_BYTES = 64 * 1024
_READ_CHUNK = 16 * 1024


# ---------------------------------------------------------------------------
# Interface


@dataclass(frozen=True, slots=True)
class Response:
    """An HTTP answer. `headers` keys are case-insensitive when it comes from aiohttp."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    text: str = ""
    truncated: bool = False  # the body was longer than MAX_RESPONSE_BYTES; the rest was not read

    @property
    def ok(self) -> bool:
        return self.status in (200, 201, 202)

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup (works for plain dicts from fakes too)."""
        value = self.headers.get(name)
        if value is not None:
            return value
        low = name.lower()
        for k, v in self.headers.items():
            if k.lower() == low:
                return v
        return None


class TransportError(Exception):
    """The request got no HTTP answer: connection refused/reset, DNS, TLS, timeout."""

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout

    @property
    def reason(self) -> str:
        """Short label for metrics: `timeout` or `connection`."""
        return "timeout" if self.timeout else "connection"


@runtime_checkable
class Transport(Protocol):
    async def post_json(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response: ...

    async def post_multipart(
        self,
        url: str,
        fields: Sequence[tuple[str, str]],
        file_path: str | os.PathLike[str],
        file_field: str,
        content_type: str,
        headers: Mapping[str, str],
    ) -> Response: ...


# ---------------------------------------------------------------------------
# Helpers: URLs, keys, headers


def user_agent(version: str | None = None) -> str:
    return f"{USER_AGENT_PRODUCT}/{version or __version__}"


def build_headers(
    api_key: str,
    *,
    version: str | None = None,
    idempotency_key: str | None = None,
    content_type: str | None = "application/json",
) -> dict[str, str]:
    """Headers of the contract. `content_type=None` for multipart (the transport sets it)."""
    headers = {
        "Authorization": f"Bearer {api_key}",
        "User-Agent": user_agent(version),
        "Accept": "application/json",
    }
    if content_type:
        headers["Content-Type"] = content_type
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    return headers


def idempotency_key(connector_id: str, linkedid: str, revision: int | str) -> str:
    return revision_key(connector_id, linkedid, int(revision))


def audio_content_type(path: str | os.PathLike[str]) -> str:
    """Content type of a recording from its extension (case-insensitive)."""
    ext = Path(path).suffix.lower()
    return AUDIO_CONTENT_TYPES.get(ext, "application/octet-stream")


# ---------------------------------------------------------------------------
# The aiohttp implementation


class AiohttpTransport:
    """One ClientSession (keep-alive, bounded pool) shared by every request.

    Create it inside the running loop (the session is created lazily on first
    use) and `await close()` it at shutdown; also an async context manager.
    """

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        limit: int = 16,
        keepalive_timeout: float = 30.0,
        user_agent_version: str | None = None,
        ssl: Any = None,
        max_body: int = MAX_RESPONSE_BYTES,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        self.timeout = timeout
        self.limit = max(1, limit)
        self.keepalive_timeout = keepalive_timeout
        self._ua = user_agent(user_agent_version)
        self._ssl = ssl
        self.max_body = max(1, max_body)
        self._session: aiohttp.ClientSession | None = None
        self._proxies: _Proxies | None = None
        self.requests = 0  # requests sent (for tests / status)

    @classmethod
    def from_settings(cls, api: Any, *, extra_connections: int = 4) -> AiohttpTransport:
        """Build from `config.ApiSettings` (timeout, concurrency)."""
        return cls(timeout=float(api.timeout), limit=int(api.concurrency) + extra_connections)

    # -- lifecycle

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.limit,
                limit_per_host=self.limit,
                keepalive_timeout=self.keepalive_timeout,
                enable_cleanup_closed=True,
                ssl=self._ssl if self._ssl is not None else True,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=self.timeout, sock_connect=self.timeout, sock_read=self.timeout
                ),
                headers={"User-Agent": self._ua},
                raise_for_status=False,
                auto_decompress=False,  # decoded by _read_body, bounded
                # with trust_env aiohttp reads the proxy environment and ~/.netrc again,
                # in a thread, for every request; _Proxies reads them once, here
                trust_env=False,
            )
            self._proxies = _Proxies.from_env()
        return self._session

    @property
    def session(self) -> aiohttp.ClientSession:
        return self._get_session()

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> AiohttpTransport:
        self._get_session()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- requests

    async def post_json(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        hdrs = dict(headers)
        hdrs.setdefault("Content-Type", "application/json")
        try:
            return await self._post(url, data=body, headers=hdrs, timeout=None)
        except _StaleConnection:
            # A keep-alive connection closed by the server just as we reused it:
            # send once more on a fresh one (safe: Idempotency-Key).
            return await self._post(url, data=body, headers=hdrs, timeout=None, retried=True)

    async def post_multipart(
        self,
        url: str,
        fields: Sequence[tuple[str, str]],
        file_path: str | os.PathLike[str],
        file_field: str,
        content_type: str,
        headers: Mapping[str, str],
    ) -> Response:
        path = Path(file_path)
        # OSError (file gone, permissions) propagates as is: not a transport problem.
        fh: IO[bytes] = await asyncio.to_thread(path.open, "rb")
        try:
            size = os.fstat(fh.fileno()).st_size
            form = aiohttp.FormData()
            for name, value in fields:
                form.add_field(name, str(value))
            # The audio part goes last; aiohttp streams the file object in chunks.
            form.add_field(file_field, fh, filename=path.name, content_type=content_type)
            hdrs = {k: v for k, v in headers.items() if k.lower() != "content-type"}
            deadline = self.timeout + size / MIN_UPLOAD_RATE
            timeout = aiohttp.ClientTimeout(
                total=deadline, sock_connect=self.timeout, sock_read=self.timeout
            )
            return await self._post(url, data=form, headers=hdrs, timeout=timeout, retried=True)
        finally:
            await asyncio.to_thread(fh.close)

    async def _post(
        self,
        url: str,
        *,
        data: Any,
        headers: Mapping[str, str],
        timeout: aiohttp.ClientTimeout | None,
        retried: bool = False,
    ) -> Response:
        session = self._get_session()
        self.requests += 1
        hdrs = dict(headers)
        hdrs.setdefault("Accept-Encoding", "gzip, deflate")
        kwargs: dict[str, Any] = {"data": data, "headers": hdrs, "allow_redirects": False}
        if self._proxies is not None:
            kwargs.update(self._proxies.for_url(url))
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            async with session.post(url, **kwargs) as resp:
                body, truncated = await _read_body(resp, self.max_body)
                if truncated:
                    resp.close()  # drop the connection instead of draining the rest
                text = body.decode(_charset(resp), "replace")
                return Response(resp.status, resp.headers.copy(), text, truncated)
        except aiohttp.ServerDisconnectedError as exc:
            if not retried:
                raise _StaleConnection() from exc
            raise TransportError(f"server disconnected: {_describe(exc)}") from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise TransportError("request timed out", timeout=True) from exc
        except aiohttp.ClientError as exc:
            raise TransportError(_describe(exc)) from exc
        except OSError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc.strerror or exc}") from exc


class _StaleConnection(Exception):
    pass


def _charset(resp: aiohttp.ClientResponse) -> str:
    """The charset the answer declares, else UTF-8 (what the API sends)."""
    return _codec(resp.charset or "utf-8")


@functools.lru_cache(maxsize=32)
def _codec(name: str) -> str:
    try:
        return codecs.lookup(name).name
    except LookupError:
        return "utf-8"


async def _read_body(resp: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of the decoded body, and whether there was more."""
    encoding = resp.headers.get("Content-Encoding", "").strip().lower()
    decoder = None
    if encoding in ("gzip", "x-gzip", "deflate"):
        decoder = zlib.decompressobj(wbits=47)  # gzip or zlib header, detected
    out = bytearray()
    while len(out) <= limit:
        chunk = await resp.content.read(_READ_CHUNK)
        if not chunk:
            if decoder is not None:
                out += decoder.flush()
            break
        if decoder is None:
            out += chunk
            continue
        try:
            out += decoder.decompress(chunk, limit + 1 - len(out))
            while decoder.unconsumed_tail and len(out) <= limit:
                out += decoder.decompress(decoder.unconsumed_tail, limit + 1 - len(out))
        except zlib.error:  # not what Content-Encoding said: keep what decoded
            break
    if len(out) > limit:
        return bytes(out[:limit]), True
    return bytes(out), False


class _Proxies:
    """HTTP_PROXY / HTTPS_PROXY / NO_PROXY (and the proxy's ~/.netrc credentials), read
    once at start-up with aiohttp's own rules; the choice is cached per scheme and host."""

    def __init__(self, env: dict[str, str], proxies: Mapping[str, ProxyInfo]) -> None:
        self._env = env
        self._proxies = proxies
        self._cache: dict[tuple[str, str], dict[str, Any]] = {}
        self._by_url: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_env(cls) -> _Proxies:
        return cls(urllib.request.getproxies_environment(), proxies_from_env())

    def for_url(self, url: str) -> dict[str, Any]:
        """`proxy=` / `proxy_headers=` keywords of a request to `url` ({} = direct)."""
        known = self._by_url.get(url)
        if known is not None:  # the shipper posts to one URL: no urlsplit per request
            return known
        kw = self._for_host(url)
        if len(self._by_url) < 64:
            self._by_url[url] = kw
        return kw

    def _for_host(self, url: str) -> dict[str, Any]:
        parts = urlsplit(url)
        key = (parts.scheme, parts.hostname or "")
        if key not in self._cache:
            info = self._proxies.get(parts.scheme)
            kw: dict[str, Any] = {}
            # NO_PROXY against the start-up snapshot (stdlib, missing from typeshed)
            bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
            if info is not None and not bypass(key[1], self._env):
                kw["proxy"] = info.proxy
                if info.proxy_auth is not None:
                    kw["proxy_headers"] = {"Proxy-Authorization": info.proxy_auth.encode()}
            self._cache[key] = kw
        return self._cache[key]


def _describe(exc: BaseException) -> str:
    msg = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {msg}"[:300]
