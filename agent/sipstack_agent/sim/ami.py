"""A simulated Asterisk Manager Interface server (tests, bench): asyncio, AMI text protocol.

Enough of Asterisk's manager.c behaviour for a real client (panoramisk) to talk
to it: the banner line, `Action: Login` -> `Response: Success` (or `Response:
Error` / `Message: Authentication failed` and the connection closed, as
Asterisk does), ActionID echoed, `Action: Ping` -> `Ping: Pong`, `Action:
Logoff` -> Goodbye, `Action: Challenge` / `AuthType: MD5` and the MD5 login
(`AuthType: MD5`, `Key: md5(challenge + secret)`; `offer_challenge = False` for a
server without it), `Event: CEL` blocks sent to logged-in sessions whose event
mask includes the `call` class (cel_manager raises CEL with EVENT_FLAG_CALL),
and fault injection: drop every connection mid-stream, stop answering pings.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

EOL = "\r\n"
BANNER = "Asterisk Call Manager/5.0.6"


def event_block(headers: list[tuple[str, str]]) -> bytes:
    """One AMI message on the wire: `Key: value` lines and the blank line."""
    return (EOL.join(f"{k}: {v}" for k, v in headers) + EOL + EOL).encode("utf-8")


def cel_event(
    eventname: str,
    eventtime: datetime,
    uniqueid: str,
    linkedid: str,
    *,
    local_tz: Any = UTC,
    timestamp: bool = False,
    **fields: str,
) -> list[tuple[str, str]]:
    """Headers of one `Event: CEL`, in cel_manager.c's order. fields use AMI names."""
    local = eventtime.astimezone(local_tz)
    h = [
        ("Event", "CEL"),
        ("Privilege", "call,all"),
    ]
    if timestamp:
        h.append(("Timestamp", f"{eventtime.timestamp():.6f}"))
    h += [
        ("EventName", eventname),
        ("AccountCode", fields.get("AccountCode", "")),
        ("CallerIDnum", fields.get("CallerIDnum", "")),
        ("CallerIDname", fields.get("CallerIDname", "")),
        ("CallerIDani", fields.get("CallerIDani", "")),
        ("CallerIDrdnis", fields.get("CallerIDrdnis", "")),
        ("CallerIDdnid", fields.get("CallerIDdnid", "")),
        ("Exten", fields.get("Exten", "")),
        ("Context", fields.get("Context", "")),
        ("Channel", fields.get("Channel", "")),
        ("Application", fields.get("Application", "")),
        ("AppData", fields.get("AppData", "")),
        ("EventTime", local.strftime("%Y-%m-%d %H:%M:%S")),
        ("AMAFlags", fields.get("AMAFlags", "DOCUMENTATION")),
        ("UniqueID", uniqueid),
        ("LinkedID", linkedid),
        ("Userfield", fields.get("Userfield", "")),
        ("Peer", fields.get("Peer", "")),
        ("PeerAccount", fields.get("PeerAccount", "")),
    ]
    if "UserDefType" in fields:
        h.append(("UserDefType", fields["UserDefType"]))
    h.append(("Extra", fields.get("Extra", "")))
    return h


class _Session:
    def __init__(
        self, server: AmiServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ):
        self.server = server
        self.reader = reader
        self.writer = writer
        self.logged_in = False
        self.events: set[str] = set()
        self.challenge = ""

    def wants_cel(self) -> bool:
        return self.logged_in and bool(self.events & {"call", "on", "all"})

    def send(self, headers: list[tuple[str, str]]) -> None:
        if not self.writer.is_closing():
            self.writer.write(event_block(headers))

    async def serve(self) -> None:
        self.writer.write((BANNER + EOL).encode())
        buf = b""
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    return
                buf += data
                while b"\r\n\r\n" in buf:
                    raw, buf = buf.split(b"\r\n\r\n", 1)
                    action: dict[str, str] = {}
                    for line in raw.decode("utf-8", "replace").split("\r\n"):
                        if ": " in line:
                            k, v = line.split(": ", 1)
                            action[k.lower()] = v
                    if not action:
                        continue
                    if not await self.handle(action):
                        return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.server.sessions.discard(self)
            with contextlib.suppress(Exception):
                self.writer.close()

    async def handle(self, a: dict[str, str]) -> bool:
        name = a.get("action", "").lower()
        aid = [("ActionID", a["actionid"])] if "actionid" in a else []
        self.server.actions.append(a)
        if name == "challenge" and self.server.offer_challenge:
            if a.get("authtype", "").lower() != "md5":
                self.send([("Response", "Error"), *aid, ("Message", "Must specify AuthType")])
                return True
            self.challenge = str(secrets.randbelow(10**9))
            self.send([("Response", "Success"), *aid, ("Challenge", self.challenge)])
            return True
        if name == "login":
            self.server.login_attempts += 1
            if a.get("username") == self.server.username and self._authenticated(a):
                self.logged_in = True
                mask = a.get("events", "on").lower()
                self.events = {p.strip() for p in mask.split(",")}
                if mask == "off":
                    self.events = set()
                self.send([("Response", "Success"), *aid, ("Message", "Authentication accepted")])
                self.send(
                    [
                        ("Event", "FullyBooted"),
                        ("Privilege", "system,all"),
                        ("Uptime", "10"),
                        ("LastReload", "10"),
                        ("Status", "Fully Booted"),
                    ]
                )
                self.server.logins += 1
                self.server.logged_in.set()
                return True
            self.send([("Response", "Error"), *aid, ("Message", "Authentication failed")])
            await self.writer.drain()
            return False  # Asterisk drops the session after a failed login
        if not self.logged_in:
            self.send([("Response", "Error"), *aid, ("Message", "Permission denied")])
            return True
        if name == "ping":
            self.server.pings += 1
            if self.server.answer_pings:
                ts = f"{datetime.now(UTC).timestamp():.6f}"
                self.send([("Response", "Success"), *aid, ("Ping", "Pong"), ("Timestamp", ts)])
            return True
        if name == "logoff":
            self.send([("Response", "Goodbye"), *aid, ("Message", "Thanks for all the fish.")])
            await self.writer.drain()
            return False
        self.send([("Response", "Error"), *aid, ("Message", "Invalid/unknown command")])
        return True

    def _authenticated(self, a: dict[str, str]) -> bool:
        """Asterisk's manager.c: an MD5 key over the last challenge, or the secret itself."""
        if a.get("authtype", "").lower() == "md5":
            if not self.challenge:
                return False
            want = hashlib.md5((self.challenge + self.server.secret).encode()).hexdigest()  # noqa: S324 - the AMI protocol
            ok = hmac.compare_digest(a.get("key", ""), want)
            self.server.md5_logins += ok
            return ok
        return a.get("secret") == self.server.secret


class AmiServer:
    """`async with AmiServer("user", "secret") as srv:` -> srv.port; srv.send_cel(...)."""

    def __init__(self, username: str = "sipstack", secret: str = "s3cret") -> None:  # noqa: S107 - the simulator's own login
        self.username = username
        self.secret = secret
        self.sessions: set[_Session] = set()
        self.actions: list[dict[str, str]] = []
        self.login_attempts = 0
        self.logins = 0
        self.md5_logins = 0
        self.offer_challenge = True  # False: an AMI that only knows the Secret login
        self.pings = 0
        self.answer_pings = True
        self.logged_in = asyncio.Event()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> AmiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, port: int = 0, ssl: Any = None) -> int:
        """Listen on 127.0.0.1 (`ssl`: an ssl.SSLContext for AMI over TLS)."""

        async def on_client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            s = _Session(self, r, w)
            self.sessions.add(s)
            await s.serve()

        self._server = await asyncio.start_server(on_client, "127.0.0.1", port, ssl=ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        self.drop_all()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    def listeners(self) -> list[_Session]:
        return [s for s in self.sessions if s.wants_cel()]

    def send_cel(self, headers: list[tuple[str, str]] | Mapping[str, str]) -> int:
        """Send one CEL event to every logged-in session subscribed to it; returns receivers."""
        h = list(headers.items()) if isinstance(headers, Mapping) else headers
        n = 0
        for s in list(self.sessions):
            if s.wants_cel():
                s.send(h)
                n += 1
        return n

    def send_raw(self, data: bytes) -> None:
        for s in list(self.sessions):
            if s.logged_in and not s.writer.is_closing():
                s.writer.write(data)

    def drop_all(self) -> None:
        """Cut every connection now (like a crash or a network drop)."""
        for s in list(self.sessions):
            transport = s.writer.transport
            with contextlib.suppress(Exception):
                transport.abort()
        self.sessions.clear()
        self.logged_in.clear()

    async def wait_logins(self, n: int, timeout: float = 20.0) -> None:
        async def _wait() -> None:
            while self.logins < n or not self.listeners():  # noqa: ASYNC110 - two conditions, polled
                await asyncio.sleep(0.01)

        await asyncio.wait_for(_wait(), timeout)
