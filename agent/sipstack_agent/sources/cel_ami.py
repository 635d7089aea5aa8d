"""CEL from the Asterisk Manager Interface (CEL_MODE=ami, cel_manager).

A panoramisk client logs in (AMI_HOST, AMI_PORT 5038 / 5039 with AMI_TLS),
asks only for the event class CEL is raised in (`Events: call`: cel_manager.c
raises CEL with EVENT_FLAG_CALL; configurable with AmiSettings.events), keeps
the connection alive with Ping, and reconnects with exponential backoff and
jitter. A failed login is a clear error and a health condition
(`state == "auth_failed"`, `last_error`). The CEL events themselves, the bulk of
the stream, are split off the socket by `ami_events.cel_headers` (the same
reading as panoramisk's, without its per-message objects) and mapped a socket
read at a time; everything else goes through panoramisk.

AMI has no replay, so every `Event: CEL` is mapped to a `CelRow` and written to
the state store (`store.ingest`) as soon as possible; nothing else acknowledges
it. Time the agent was not connected (disconnects, agent restarts) is
recorded as a gap in the position record "ami:gaps":

    {"gaps": [{"start": ISO, "end": ISO | None, "reason": str}, ...]}

start = the last moment the feed was known alive (last event or Pong), end =
the next successful login (None while still disconnected). The call core uses
`load_gaps()` / `overlaps_gap()` to mark calls that were active during a gap
(`gap: true`) and complete them from their CDR rows instead of trusting their
incomplete CEL (see docs/cel-sources.md).

Bounded: one AMI message may be at most MAX_AMI_MESSAGE bytes (a CEL event
is about 1 KiB; a peer that sends more without the blank line that ends a
message is cut off and the connection closed), and at most `buffer_max`
events wait in memory for the state store: beyond that the source stops
reading the socket (TCP backpressure towards Asterisk) until the writer has
stored half of them. Time not read is a gap like a disconnect.

EventTime is Asterisk's local time in whole seconds ("%Y-%m-%d %H:%M:%S",
interpreted in DB_TIMEZONE); when manager.conf has `timestampevents = yes` the
`Timestamp` header (epoch, microseconds) is used instead when it agrees.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..config import AmiSettings
from ..metrics import Metrics
from ..model import CelRow
from ..rules.backoff import reconnect_delay
from ..rules.checks import CheckResult
from ..watermarks import Watermarks
from .ami_events import Headers, event_to_row, headers_to_row
from .ami_session import AmiAuthError, AmiSession, ami_port
from .celtime import TimeParser
from .store import PositionStore, SourceStore
from .timezone import ClockCheck

__all__ = [
    "GAPS_POSITION",
    "POSITION",
    "AmiAuthError",
    "CelAmiSource",
    "Gap",
    "check_ami",
    "event_to_row",
    "load_gaps",
    "overlaps_gap",
]

log = logging.getLogger(__name__)

POSITION = "ami"
GAPS_POSITION = "ami:gaps"
MAX_GAPS = 500
MAX_BUFFERED_EVENTS = 10_000  # events held in memory before reading pauses
GAP_KEEP_SECONDS = 30 * 86400.0


# --------------------------------------------------------------------------- gaps


@dataclass(frozen=True, slots=True)
class Gap:
    """An interval in which AMI CEL events may have been missed. end=None: still open."""

    start: datetime
    end: datetime | None
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat() if self.end else None,
            "reason": self.reason,
        }

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> Gap:
        end = d.get("end")
        return Gap(
            datetime.fromisoformat(str(d["start"])),
            datetime.fromisoformat(str(end)) if end else None,
            str(d.get("reason", "")),
        )


async def load_gaps(store: PositionStore) -> list[Gap]:
    """The recorded AMI gaps, oldest first (empty when the AMI source never ran)."""
    pos = await store.get_position(GAPS_POSITION)
    if not pos:
        return []
    out: list[Gap] = []
    for d in pos.get("gaps", ()):
        with contextlib.suppress(KeyError, ValueError, TypeError):
            out.append(Gap.from_json(d))
    return out


def overlaps_gap(
    gaps: Sequence[Gap], first_event: datetime, last_event: datetime | None, now: datetime
) -> Gap | None:
    """The first gap during which a call was (or may have been) active, else None.

    A call is active from its first event to its last one; an incomplete call
    (last_event=None) up to `now`. Such a call may miss CEL rows: mark it
    `gap: true` and complete it from its CDR rows.
    """
    end = last_event or now
    for g in gaps:
        g_end = g.end or now
        if first_event <= g_end and end >= g.start:
            return g
    return None


# --------------------------------------------------------------------------- the source


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


class CelAmiSource:
    """Subscribe to AMI CEL events and store them. See the module docstring.

    state: starting | connecting | connected | auth_failed | disconnected | stopped.
    `last_error` holds the reason of the last failure (None while connected).
    """

    def __init__(
        self,
        settings: AmiSettings,
        store: SourceStore,
        metrics: Metrics,
        timezone: str = "UTC",
        *,
        batch_max: int = 2000,
        buffer_max: int = MAX_BUFFERED_EVENTS,
        ping_timeout: float | None = None,
        clock: Callable[[], float] = time.time,
        clock_check: ClockCheck | None = None,
        watermarks: Watermarks | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.timezone = timezone
        self.times = TimeParser(timezone)
        self.batch_max = batch_max
        self.buffer_max = max(1, buffer_max)
        self._paused: Any = None  # the transport whose reading is paused (buffer full)
        self.read_pauses = 0
        self.ping_timeout = (
            ping_timeout if ping_timeout is not None else max(5.0, settings.ping_interval)
        )
        self._clock = clock
        self.clock_check = clock_check  # the zone sanity check (sources/timezone.py)
        self.state = "starting"
        self.last_error: str | None = None
        self.version = ""
        self.events_received = 0
        self.events_stored = 0
        self.connects = 0
        self._session_id = f"{time.time_ns():x}"
        self._seq = 0
        self._buf: list[CelRow] = []
        self._wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._last_alive: float | None = None
        self._last_alive_saved = 0.0
        self._gaps: list[Gap] = []
        self._bad_logged = False
        self._auth_logged: str | None = None
        # A push feed: caught up whenever connected with nothing left to store; while
        # disconnected it holds nothing back (what it misses is a gap, see above).
        self._marks = watermarks
        if watermarks is not None:
            watermarks.register(POSITION)
            watermarks.on_want(self._caught_up)

    @property
    def connected(self) -> bool:
        return self.state == "connected"

    @property
    def healthy(self) -> bool:
        """False for conditions an operator must fix (wrong credentials)."""
        return self.state != "auth_failed"

    # -- events ---------------------------------------------------------------

    def _on_event(self, manager: Any, message: Mapping[str, Any]) -> None:
        """One CEL event parsed by panoramisk (headers in any case)."""
        self.events_received += 1
        self._last_alive = self._clock()
        self._seq += 1
        try:
            row = event_to_row(message, self.times, f"{self._session_id}:{self._seq}")
        except (ValueError, TypeError) as exc:
            self._unusable(exc, message)
        else:
            self._buf.append(row)
        self._buffered(manager)

    def _on_cels(self, manager: Any, items: list[Headers]) -> None:
        """The CEL events of one read from the socket (`ami_events.cel_headers`)."""
        self.events_received += len(items)
        self._last_alive = self._clock()
        times, buf = self.times, self._buf
        prefix = self._session_id + ":"
        seq = self._seq
        for h in items:
            seq += 1
            try:
                buf.append(headers_to_row(h, times, prefix + str(seq)))
            except (ValueError, TypeError) as exc:
                self._unusable(exc, h)
        self._seq = seq
        self._buffered(manager)

    def _unusable(self, exc: Exception, message: Mapping[str, Any]) -> None:
        self.metrics.rows_discarded.labels(reason="ami_bad_event").inc()
        if not self._bad_logged:
            self._bad_logged = True
            log.warning("AMI CEL event not usable (%s): %r", exc, dict(message))

    def _buffered(self, manager: Any) -> None:
        """Wake the writer; pause reading the socket while the buffer is full."""
        self._wake.set()
        if len(self._buf) >= self.buffer_max and self._paused is None:
            transport = getattr(getattr(manager, "protocol", None), "transport", None)
            if transport is not None:
                transport.pause_reading()
                self._paused = transport
                self.read_pauses += 1
                log.warning(
                    "%d AMI CEL events wait for the state store; reading from the AMI "
                    "paused until half are stored",
                    len(self._buf),
                )

    def _resume_reading(self) -> None:
        if self._paused is not None and len(self._buf) <= self.buffer_max // 2:
            with contextlib.suppress(Exception):  # a closed transport: nothing to resume
                self._paused.resume_reading()
            self._paused = None

    async def _flush(self) -> None:
        """Write buffered rows; on a store failure they stay buffered (retried)."""
        async with self._flush_lock:  # the writer task and a disconnect may flush at once
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        while self._buf:
            rows = self._buf[: self.batch_max]
            pos = self._position()
            res = await self.store.ingest(rows, [], {POSITION: pos})
            del self._buf[: len(rows)]
            self._resume_reading()
            self._last_alive_saved = self._clock()
            if self.clock_check is not None:  # AMI has no backlog: every event is live
                self.clock_check.observe(max(r.eventtime for r in rows), live=True)
            new = getattr(res, "new_cels", len(rows))
            self.events_stored += len(rows)
            if new:
                self.metrics.cels_processed.labels(source="ami").inc(new)
        self._caught_up()

    def _caught_up(self) -> None:
        """Everything received so far is stored: publish the watermark (now)."""
        if self._marks is not None and self.connected and not self._buf:
            self._marks.publish(POSITION, caught_up_at=datetime.fromtimestamp(self._clock(), UTC))

    async def _writer(self, stop: asyncio.Event) -> None:
        failures = 0
        while True:
            if not self._buf:
                if stop.is_set():
                    return
                self._wake.clear()
                waiter = asyncio.ensure_future(self._wake.wait())
                stopper = asyncio.ensure_future(stop.wait())
                try:
                    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                    stopper.cancel()
                continue
            try:
                await self._flush()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                log.error(
                    "cannot store AMI CEL events (%s); %d buffered, retrying", exc, len(self._buf)
                )
                await asyncio.sleep(min(0.1 * 2**failures, 5.0))

    def _position(self) -> dict[str, Any]:
        t = self._last_alive or self._clock()
        return {"last_alive": _iso(t), "session": self._session_id, "connected": self.connected}

    # -- gaps -----------------------------------------------------------------

    async def _save_gaps(self) -> None:
        now = datetime.now(UTC)
        keep = [
            g
            for g in self._gaps
            if g.end is None or (now - g.end).total_seconds() < GAP_KEEP_SECONDS
        ][-MAX_GAPS:]
        self._gaps = keep
        await self.store.set_position(GAPS_POSITION, {"gaps": [g.as_json() for g in keep]})

    async def _open_gap(self, start: float, reason: str) -> None:
        if self._gaps and self._gaps[-1].end is None:
            return
        self._gaps.append(Gap(datetime.fromtimestamp(start, UTC), None, reason))
        self.metrics.ami_gaps.inc()
        await self._save_gaps()

    async def _close_gap(self, end: float) -> None:
        if self._gaps and self._gaps[-1].end is None:
            g = self._gaps[-1]
            self._gaps[-1] = Gap(g.start, datetime.fromtimestamp(end, UTC), g.reason)
            log.warning(
                "AMI CEL gap from %s to %s: calls active then are completed from CDR",
                g.start.isoformat(),
                self._gaps[-1].end.isoformat() if self._gaps[-1].end else "?",
            )
            await self._save_gaps()

    async def _load_state(self) -> None:
        self._gaps = await load_gaps(self.store)
        pos = await self.store.get_position(POSITION)
        if pos and pos.get("last_alive"):
            try:
                last = datetime.fromisoformat(str(pos["last_alive"])).timestamp()
            except ValueError:
                last = self._clock()
            # Events between the previous run's last sign of life and our first login are
            # not replayable: that is a gap.
            await self._open_gap(last, "agent restart")

    # -- lifecycle ------------------------------------------------------------

    def _set_state(self, state: str, error: str | None = None) -> None:
        self.state = state
        self.last_error = error
        up = 1 if state == "connected" else 0
        if self._marks is not None and state in ("disconnected", "auth_failed", "stopped"):
            self._marks.release(POSITION)
        self.metrics.ami_connected.set(up)
        self.metrics.database_connection_status.labels(source="cel_ami").set(up)

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        try:
            await self._load_state()
        except Exception as exc:  # the store is needed; report and keep trying below
            log.error("cannot read the AMI position: %s", exc)
        writer = asyncio.create_task(self._writer(stop), name="ami-cel-writer")
        attempt = 0  # reconnects since the last login
        try:
            while not stop.is_set():
                logged_in = False
                self._set_state("connecting", self.last_error)
                session = AmiSession(s, self._on_event, self._on_cels)
                try:
                    self.metrics.db_reconnects.labels(source="ami").inc()
                    await session.open()
                    logged_in = True
                    await self._connected(session)
                    await self._serve(session, stop)
                    if not stop.is_set():
                        raise ConnectionError("AMI connection lost")
                except AmiAuthError as exc:
                    self._set_state("auth_failed", str(exc))
                    if self._auth_logged != str(exc):
                        self._auth_logged = str(exc)
                        log.error(
                            "%s. Check AMI_USERNAME/AMI_PASSWORD against manager.conf "
                            "(and its permit/deny lines); retrying with backoff",
                            exc,
                        )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    err = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                    self._set_state("disconnected", err)
                    log.warning("AMI %s:%d: %s", s.host, ami_port(s), err)
                finally:
                    session.close()
                    if logged_in:
                        await self._disconnected(
                            "agent stopped" if stop.is_set() else "connection lost"
                        )
                if stop.is_set():
                    break
                attempt = 0 if logged_in else attempt + 1
                initial = max(s.backoff_initial, 0.01)
                delay = reconnect_delay(initial, s.backoff_cap, attempt, random.random())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        finally:
            # Stop the writer (also when run() itself is cancelled), then write what is left:
            # rows leave the buffer only after their ingest returned, so nothing is lost and
            # a row whose ingest was interrupted is de-duplicated by its dedup_key.
            writer.cancel()
            with contextlib.suppress(BaseException):
                await writer
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._flush(), 10.0)
            with contextlib.suppress(Exception):
                await self.store.set_position(POSITION, self._position() | {"connected": False})
            self._set_state("stopped", self.last_error)

    async def _connected(self, session: AmiSession) -> None:
        self.connects += 1
        self._paused = None  # that transport is gone; a new one reads
        self.version = session.version
        self._auth_logged = None
        now = self._clock()
        self._last_alive = now
        self._set_state("connected")
        log.info(
            "AMI connected to %s:%d (%s), CEL events subscribed",
            self.settings.host,
            ami_port(self.settings),
            self.version or "unknown version",
        )
        await self._close_gap(now)
        await self.store.set_position(POSITION, self._position())
        self._caught_up()

    async def _disconnected(self, reason: str) -> None:
        start = self._last_alive or self._clock()
        self._set_state("disconnected", self.last_error or reason)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._flush(), 10.0)
        try:
            await self._open_gap(start, reason)
        except Exception as exc:
            log.error("cannot record the AMI gap: %s", exc)

    async def _serve(self, session: AmiSession, stop: asyncio.Event) -> None:
        assert session.lost is not None
        interval = max(self.settings.ping_interval, 0.05)
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while True:
                done, _ = await asyncio.wait(
                    {session.lost, stopper}, timeout=interval, return_when=asyncio.FIRST_COMPLETED
                )
                if done:
                    return
                await session.ping(self.ping_timeout)  # raises on timeout / lost connection
                self._last_alive = self._clock()
                self._caught_up()
                if self._last_alive - self._last_alive_saved >= interval and not self._buf:
                    self._last_alive_saved = self._last_alive
                    await self.store.set_position(POSITION, self._position())
        finally:
            stopper.cancel()


# --------------------------------------------------------------------------- check


async def check_ami(
    settings: AmiSettings, timezone: str = "UTC", *, wait: float = 5.0
) -> list[CheckResult]:
    """`sipstack-agent check` for CEL_MODE=ami.

    Logs in, then waits up to `wait` seconds for one CEL event. No event on an
    idle PBX is not a failure: WARN, said in the detail (rules/checks.py).
    """
    out: list[CheckResult] = []
    times = TimeParser(timezone)
    got: list[CelRow] = []
    errors: list[str] = []
    seen = asyncio.Event()

    def on_event(_m: Any, message: Mapping[str, Any]) -> None:
        try:
            got.append(event_to_row(message, times))
        except (ValueError, TypeError) as exc:
            errors.append(str(exc))
        seen.set()

    session = AmiSession(settings, on_event)
    where = f"{settings.host}:{ami_port(settings)}"
    try:
        await session.open()
    except AmiAuthError as exc:
        out.append(
            CheckResult.fail(
                "ami login",
                str(exc),
                "AMI_USERNAME/AMI_PASSWORD must match a manager.conf user (permit= must allow "
                "this host)",
            )
        )
        session.close()
        return out
    except Exception as exc:  # refused, timeout, TLS, not an AMI...
        out.append(
            CheckResult.fail(
                "ami login",
                f"cannot connect to the AMI at {where}: {exc}",
                "manager.conf [general] enabled=yes, bindaddr/port (TLS: tlsenable, 5039), "
                "AMI_HOST/AMI_PORT/AMI_TLS",
            )
        )
        session.close()
        return out
    try:
        out.append(CheckResult.ok("ami login", f"logged in at {where} ({session.version or '?'})"))
        assert session.lost is not None
        waiter = asyncio.ensure_future(seen.wait())
        await asyncio.wait(
            {waiter, session.lost}, timeout=wait, return_when=asyncio.FIRST_COMPLETED
        )
        waiter.cancel()
        if got:
            out.append(CheckResult.ok("ami cel events", f"CEL event received ({got[0].eventtype})"))
        elif errors:
            out.append(CheckResult.fail("ami cel events", f"CEL event not usable: {errors[0]}"))
        else:
            out.append(
                CheckResult.warn(
                    "ami cel events",
                    f"no CEL event within {wait:g} s (fine on an idle PBX)",
                    "if calls are running: cel.conf [general] enable=yes and [manager] "
                    "enabled=yes, and the manager.conf user needs read=call",
                )
            )
    finally:
        session.close()
    return out
