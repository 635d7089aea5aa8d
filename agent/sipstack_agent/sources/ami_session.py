"""The AMI connection: panoramisk glued to the CEL source's own lifecycle.

`AmiSession` opens one connection (TLS when AMI_TLS), logs in (the MD5
challenge when offered, sources/ami_auth.py), pings, and hands CEL events to
the source: `_BoundedProtocol` bounds one message to MAX_AMI_MESSAGE bytes and
splits CEL events off the stream with `ami_events.cel_headers`; every other
message goes through panoramisk. panoramisk's own reconnects and pings are
turned off: the source (sources/cel_ami.py) decides when to reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Any

from panoramisk import Manager
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from ..config import AmiSettings
from .ami_auth import CHALLENGE, login_action, plaintext_warning
from .ami_events import Headers, cel_headers
from .ami_events import text_of as _text

__all__ = ["MAX_AMI_MESSAGE", "AmiAuthError", "AmiProtocolError", "AmiSession", "ami_port"]

log = logging.getLogger(__name__)

MAX_AMI_MESSAGE = 64 * 1024  # bytes of one AMI message (headers up to the blank line)


class AmiAuthError(Exception):
    """The AMI rejected the login (wrong AMI_USERNAME / AMI_PASSWORD, or permit/deny)."""


class AmiProtocolError(Exception):
    """The AMI peer did not answer like an Asterisk manager."""


class _BoundedProtocol(AMIProtocol):  # type: ignore[misc]
    """panoramisk's protocol with a bound on one message (it would buffer without end).

    CEL events, the whole stream on a busy PBX, are read by `ami_events.cel_headers`
    and handed to the manager's `cel_sink` a chunk at a time, without building
    panoramisk's `Message` for each; every other message (the responses to Login,
    Challenge, Ping; other events) goes through panoramisk exactly as before.
    """

    version: str | None  # the banner's version (set by AMIProtocol.connection_made)

    def data_received(self, data: bytes) -> None:
        sink = getattr(self.factory, "cel_sink", None)
        if sink is None or getattr(self.factory, "save_stream", None):
            super().data_received(data)
        else:
            self._received(data, sink)
        pending = self.queue[0] if self.queue else ""
        if len(pending) > MAX_AMI_MESSAGE and not self.closed:
            self.queue.clear()
            log.error(
                "AMI peer sent more than %d bytes without ending the message; "
                "closing the connection (not an Asterisk manager?)",
                MAX_AMI_MESSAGE,
            )
            self.transport.abort()

    def _received(self, data: bytes, sink: Callable[[Any, list[Headers]], None]) -> None:
        """AMIProtocol.data_received, with CEL events split off to `sink` (in order)."""
        text = data.decode(getattr(self, "encoding", "ascii"), "ignore")
        if self.version is None and text.startswith("Asterisk Call Manager/"):
            self.version = text.partition("\r\n")[0].partition("/")[2].strip()
            self.log.info("protocol version: '%s'", self.version)
        if self.queue:
            text = self.queue.popleft() + text
        messages = text.split("\r\n\r\n")
        self.queue.append(messages.pop())
        cels: list[Headers] = []
        for raw in messages:
            line = raw.strip()  # as panoramisk: sometimes a message ends with one EOL only
            h = cel_headers(line)
            if h is not None:
                cels.append(h)
                continue
            if cels:  # keep the order of events and responses
                sink(self.factory, cels)
                cels = []
            message = Message.from_line(line)
            if message is not None:
                self.handle_message(message)
        if cels:
            sink(self.factory, cels)


class _Manager(Manager):  # type: ignore[misc]
    """panoramisk Manager whose connection lifecycle belongs to CelAmiSource.

    panoramisk reconnects on its own with a fixed delay and pings without
    checking the answer; here a lost connection only resolves `lost` and the
    source decides when to reconnect (backoff + jitter) and pings itself.
    """

    pinger: Any = None
    cel_sink: Callable[[Any, list[Headers]], None] | None = None  # see _BoundedProtocol

    def __init__(self, lost: asyncio.Future[Any], **config: Any) -> None:
        super().__init__(**config)
        self._lost = lost

    def connection_made(self, f: asyncio.Future[Any]) -> None:
        if f.cancelled() or f.exception() is not None:
            return  # the awaiting coroutine sees the failure; no automatic reconnect
        super().connection_made(f)

    def connection_lost(self, exc: Any) -> None:
        self._connected = False
        if self.pinger:
            self.pinger.cancel()
            self.pinger = None
        if not self._lost.done():
            self._lost.set_result(exc)

    def ping(self) -> None:  # our own keepalive checks the Pong
        self.pinger = None


async def _first(fut: asyncio.Future[Any], lost: asyncio.Future[Any], timeout: float) -> Any:
    """Await `fut`, failing fast if the connection is lost or `timeout` passes."""
    done, _ = await asyncio.wait({fut, lost}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if fut in done:
        return fut.result()
    if lost in done:
        raise ConnectionError("AMI connection closed")
    raise TimeoutError("no answer from the AMI")


def _latin1(s: str) -> str:
    """Text to send over the latin-1 connection so that its bytes are UTF-8."""
    return s.encode("utf-8").decode("latin-1")


def _ssl_context(settings: AmiSettings) -> ssl.SSLContext | bool:
    if not settings.tls:
        return False
    ctx = ssl.create_default_context(cafile=settings.tls_ca_file or None)
    if not settings.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def ami_port(settings: AmiSettings) -> int:
    if settings.tls and settings.port == 5038:
        return 5039  # AMI over TLS listens on 5039 (manager.conf tlsbindport) by default
    return settings.port


class AmiSession:
    """One connected, logged-in AMI connection."""

    def __init__(
        self,
        settings: AmiSettings,
        on_event: Any,
        on_cels: Callable[[Any, list[Headers]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_event = on_event  # (manager, panoramisk Message): a CEL event panoramisk read
        self.on_cels = on_cels  # (manager, [headers]): the CEL events read by cel_headers
        self.lost: asyncio.Future[Any] | None = None
        self.manager: _Manager | None = None
        self.version = ""

    async def open(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        self.lost = loop.create_future()
        mgr = _Manager(
            self.lost,
            host=s.host,
            port=ami_port(s),
            ssl=_ssl_context(s),
            protocol_factory=_BoundedProtocol,
            encoding="latin-1",
            ping_delay=10**9,
            ping_interval=10**9,
            reconnect_timeout=10**9,
            loop=loop,
            log=logging.getLogger("panoramisk.manager"),
        )
        self.manager = mgr
        mgr.register_event("CEL", self.on_event)
        mgr.cel_sink = self.on_cels or self._each
        task = mgr.connect()
        try:
            await asyncio.wait_for(task, s.connect_timeout)
        except TimeoutError:
            raise TimeoutError(
                f"AMI {s.host}:{ami_port(s)}: no connection within {s.connect_timeout:g} s"
            ) from None
        challenge = await self._challenge(mgr) if s.auth != "plain" else None
        if challenge is None and s.auth == "md5":
            raise AmiAuthError(
                f"AMI {s.host}:{ami_port(s)} offers no MD5 challenge login and AMI_AUTH=md5"
            )
        resp = await _first(
            mgr.send_action(login_action(s, challenge, _latin1)), self.lost, s.connect_timeout
        )
        self.version = str(getattr(mgr.protocol, "version", "") or "")
        if isinstance(resp, list):
            resp = resp[0] if resp else None
        if resp is None or not getattr(resp, "success", False):
            message = _text(resp.get("message", "")) if resp is not None else ""
            raise AmiAuthError(
                f"AMI login as {s.username!r} at {s.host}:{ami_port(s)} failed: "
                f"{message or 'no success response'}"
            )
        if warning := plaintext_warning(s, challenge):
            log.warning(warning)

    def _each(self, manager: Any, items: list[Headers]) -> None:
        for h in items:
            self.on_event(manager, h)

    async def _challenge(self, mgr: _Manager) -> str | None:
        """The server's MD5 challenge, or None when it offers none."""
        assert self.lost is not None
        resp = await _first(
            mgr.send_action(dict(CHALLENGE)), self.lost, self.settings.connect_timeout
        )
        if isinstance(resp, list):
            resp = resp[0] if resp else None
        if resp is None or not getattr(resp, "success", False):
            return None
        return _text(resp.get("challenge", "")) or None

    async def ping(self, timeout: float) -> None:
        assert self.manager is not None and self.lost is not None
        await _first(self.manager.send_action({"Action": "Ping"}), self.lost, timeout)

    def close(self) -> None:
        if self.manager is not None:
            with contextlib.suppress(Exception):
                self.manager.close()
