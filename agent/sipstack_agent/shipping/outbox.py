"""Delivery of call documents from the durable outbox to the SIPSTACK API.

The state store holds the outbox (documents written in the same transaction
as the call's ship state). The `Shipper` takes due items, POSTs one JSON
document per request with bounded concurrency and records the outcome:

- 200/201/202: delivered (`calls_shipped{phase}`).
- 408, 425, 429, every 5xx, 3xx (misdirected API_URL), timeouts and
  connection errors: retried with exponential backoff and full jitter
  (`backoff_initial` doubling up to `backoff_cap`), or after `Retry-After`
  (clamped to `backoff_cap`) when the API sends one; dead-lettered (reason
  `retry_horizon`) by the rule of `shipping/retry.py`: old enough AND
  retried often enough, so a wall-clock step alone never dead-letters; due
  times run on `retry.StepFreeClock`, so a step back delays no retry.
- 401/403: the key is rejected. The document is KEPT and retried with the
  same backoff (dead-lettering every call because of a wrong key would lose
  them all); `auth_failed` is raised (health + `sipstack_api_auth_failed`)
  and the shipper pauses, probing with one document per backoff step. It
  clears on the next 2xx.
- Every other 4xx: dead letter at once with status and body
  (`sipstack_dead_letters{kind,reason="http_<status>"}`).

When a whole pass fails (API down, rate limited, key rejected) the shipper
opens a circuit: it pauses (backoff capped at PROBE_PAUSE_MAX, or Retry-After)
and then sends a single probe document until one gets an HTTP answer that is
not a retry, so an outage is not met with a request per queued document.

One item's failure (a store error, a bug) is logged and retried; it never
fails the pass, so the deliveries of the other items are still recorded.
The circuit's pause runs on the monotonic clock.

Everything is cancel-safe: an item whose request was cut short stays in the
outbox and is sent again (the Idempotency-Key makes that harmless).
Shipping never imports sources, and never logs the API key or phone numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sipstack_agent.calls.document import json_bytes
from sipstack_agent.config import ApiSettings, Identity
from sipstack_agent.metrics import Metrics
from sipstack_agent.rules.redact import redact_text
from sipstack_agent.shipping.client import (
    Response,
    Transport,
    TransportError,
    build_headers,
)
from sipstack_agent.shipping.retry import RetryPolicy, StepFreeClock, decide
from sipstack_agent.state import StateDiskFull

log = logging.getLogger("sipstack_agent.shipping")

SUCCESS_STATUSES = frozenset({200, 201, 202})
RETRY_STATUSES = frozenset({408, 425, 429})
AUTH_STATUSES = frozenset({401, 403})
MAX_BODY_KEPT = 4000  # characters of an error body kept in the dead-letter store


class OutboxStore(Protocol):
    """The part of `state.StateStore` the shipper uses (docs/architecture.md)."""

    async def outbox_due(
        self, now: datetime, limit: int, kind: str | None = None
    ) -> Sequence[Any]: ...

    async def outbox_delivered(self, item_id: int | Sequence[int]) -> Any: ...

    async def outbox_retry(self, item_id: int, next_attempt_at: datetime, error: str) -> Any: ...

    async def outbox_pull_in(self, latest: datetime) -> int: ...

    async def outbox_dead(
        self, item_id: int, status: int | None, body: str, reason: str
    ) -> Any: ...

    async def stats(self, now: datetime) -> Any: ...


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    AUTH = "auth"  # retried, and the health flag goes up
    DEAD = "dead"


def classify(status: int) -> Outcome:
    """The contract's classification of an HTTP status."""
    if status in SUCCESS_STATUSES:
        return Outcome.DELIVERED
    if status in AUTH_STATUSES:
        return Outcome.AUTH
    if status in RETRY_STATUSES or status >= 500:
        return Outcome.RETRY
    if 400 <= status < 500:
        return Outcome.DEAD
    # 1xx/204-299 not in the contract/3xx: nothing we can act on; keep the
    # document and retry (a redirect usually means a wrong API_URL).
    if 200 <= status < 300:
        return Outcome.DELIVERED
    return Outcome.RETRY


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _as_seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


@dataclass(slots=True)
class _Result:
    outcome: Outcome
    status: int = 0  # 0 = no HTTP answer
    retry_after: float | None = None
    error: str = ""


PROBE_PAUSE_MAX = 60.0  # the longest pause of the circuit between probes, Retry-After aside
DISK_FULL_PAUSE = 5.0  # seconds between attempts to mark deliveries on a full state disk
MAX_PASS = 1024  # documents one pass of the shipper takes from the outbox, at most


class Shipper:
    """Ships the outbox's `kind` items (default: call documents) to `api.url`."""

    def __init__(
        self,
        store: OutboxStore,
        transport: Transport,
        api: ApiSettings,
        identity: Identity,
        metrics: Metrics,
        *,
        kind: str = "call",
        clock: Callable[[], datetime] = _utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        batch_size: int | None = None,
        idle_interval: float = 0.25,
        stats_interval: float = 1.0,
        stuck_after: float = 600.0,
    ) -> None:
        self.store = store
        self.transport = transport
        self.api = api
        self.identity = identity
        self.metrics = metrics
        self.kind = kind
        self._clock = clock
        self._mono = monotonic
        self._queue_clock = StepFreeClock(clock, monotonic)  # due times and retry schedule
        self.policy = RetryPolicy.of(api)
        # The circuit's own pause (no Retry-After): at most PROBE_PAUSE_MAX, so the first
        # delivery after an outage comes within a minute of the API's return, not five.
        self._probe_policy = replace(self.policy, cap=min(self.policy.cap, PROBE_PAUSE_MAX))
        self._rng = rng or random.Random()
        self.concurrency = max(1, int(api.concurrency))
        # Documents per pass: a pass waits for its slowest request and costs two store
        # round trips, so bigger passes keep the requests in flight busier (an outage's
        # outbox: 512 per pass shipped 4 761-5 275/s against 3 796-4 075 with 128,
        # bench/outage.py); bounded (MAX_PASS) whatever API_CONCURRENCY is.
        self.batch_size = batch_size or min(self.concurrency * 32, MAX_PASS)
        self.idle_interval = idle_interval
        self.stats_interval = stats_interval
        self.stuck_after = stuck_after
        self._sem = asyncio.Semaphore(self.concurrency)
        self._wake = asyncio.Event()

        self.started_at: datetime = clock()
        self.last_success_at: datetime | None = None
        self.last_attempt_at: datetime | None = None
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self.auth_failed: bool = False
        self.consecutive_failures: int = 0  # passes in a row without any usable answer
        self._resume_mono: float | None = None  # circuit open until then (monotonic)
        self.delivered_total = 0
        self.dead_total = 0
        self.retry_total = 0
        self.outbox_depth: int = 0
        self.oldest_undelivered_age: float | None = None
        self.dead_letters_stored: int | None = None
        self._last_stats_mono: float | None = None
        self._stats_cost = 0.0  # seconds the last refresh took
        self._kinds_seen: set[str] = set()
        # Accepted by the API but not marked delivered yet (the store refused the mark:
        # a full disk): marked before anything else is sent, never sent again meanwhile.
        self._unmarked: list[int] = []
        self.metrics.api_auth_failed.set(0)

    # ------------------------------------------------------------------ circuit

    @property
    def paused_until(self) -> datetime | None:
        """When the circuit's pause ends, on the wall clock (for /status)."""
        if self._resume_mono is None:
            return None
        return self._clock() + timedelta(seconds=self._resume_mono - self._mono())

    @paused_until.setter
    def paused_until(self, value: datetime | None) -> None:
        if value is None:
            self._resume_mono = None
        else:
            self._resume_mono = self._mono() + (value - self._clock()).total_seconds()

    def _pause_left(self) -> float:
        """Seconds the circuit stays open (0 when closed or over); immune to clock steps."""
        if self._resume_mono is None:
            return 0.0
        return max(0.0, self._resume_mono - self._mono())

    # ------------------------------------------------------------------ loop

    def notify(self) -> None:
        """Wake the loop now (called after documents were enqueued)."""
        self._wake.set()

    async def _pull_in_after_a_step_back(self) -> None:
        """At start: a due time beyond now + the backoff cap can only come from a wall
        clock that went back while the agent was stopped (no wait is longer than the cap,
        Retry-After included): such items are due within the cap again, not after the step."""
        try:
            moved = await self.store.outbox_pull_in(
                self._queue_clock() + timedelta(seconds=self.policy.cap)
            )
        except Exception as exc:  # the first pass reports store trouble
            log.debug("outbox pull-in skipped: %s", exc)
            return
        if moved:
            log.warning(
                "%d queued document(s) were due more than %.0f s ahead (the clock went back "
                "while the agent was stopped?): retried within %.0f s",
                moved,
                self.policy.cap,
                self.policy.cap,
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Ship until `stop` is set. Never raises on API or store trouble."""
        log.info(
            "shipper started: %s (concurrency %d)",
            redact_text(self.api.url, self.api.api_key),
            self.concurrency,
        )
        await self._pull_in_after_a_step_back()
        try:
            while not stop.is_set():
                self._wake.clear()
                now = self._queue_clock()
                sent = 0
                try:
                    sent = await self.ship_once(now)
                except asyncio.CancelledError:
                    raise
                except StateDiskFull as exc:
                    # Not a bug: one line, and a pause, not a re-send of the pass.
                    if not (self.last_error or "").startswith("outbox: "):
                        log.warning(
                            "%d documents delivered but not yet marked so (%s); marking them "
                            "again every %g s before sending more",
                            len(self._unmarked),
                            exc,
                            DISK_FULL_PAUSE,
                        )
                    self._note_error(f"outbox: {exc}")
                    await _wait(stop, None, DISK_FULL_PAUSE)
                except Exception as exc:
                    self._note_error(f"outbox error: {type(exc).__name__}: {exc}")
                    log.exception("shipper pass failed")
                    await _wait(stop, None, 1.0)
                await self._maybe_refresh_stats()
                if stop.is_set():
                    break
                if sent >= self.batch_size:
                    continue  # a full batch: more is probably due
                paused = self._pause_left() > 0
                await _wait(stop, None if paused else self._wake, self._idle_wait())
        finally:
            with contextlib.suppress(Exception):  # best effort at shutdown
                await self.refresh_stats(self._clock())
            log.info("shipper stopped")

    def _idle_wait(self) -> float:
        left = self._pause_left()
        if left > 0:
            return max(0.01, min(left, self.api.backoff_cap))
        return self.idle_interval

    async def ship_once(self, now: datetime) -> int:
        """One pass: send the due items; returns the number of requests made."""
        now = max(_aware(now), self._queue_clock())  # a wall clock stepped back delays nothing
        if self._unmarked:
            await self.store.outbox_delivered(self._unmarked)  # may raise again: nothing sent
            self._unmarked = []
        if self._pause_left() > 0:
            return 0
        limit = 1 if self.consecutive_failures > 0 else self.batch_size
        items = await self.store.outbox_due(now, limit, kind=self.kind)
        if not items:
            return 0
        delivered: list[int] = []
        try:
            results = await asyncio.gather(*(self._guarded(item, delivered) for item in items))
        finally:
            # One transaction for the pass's deliveries (a crash before it only
            # means a re-send, which the Idempotency-Key makes harmless).
            if delivered:
                try:
                    await self.store.outbox_delivered(delivered)
                except StateDiskFull:
                    self._unmarked = delivered
                    raise
        self._after_pass(self._clock(), results)
        return len(results)

    def _after_pass(self, now: datetime, results: Sequence[_Result]) -> None:
        # The API answered something definitive (status 0 = we never asked it).
        answered = any(
            r.outcome is Outcome.DELIVERED or (r.outcome is Outcome.DEAD and r.status > 0)
            for r in results
        )
        if answered:
            if self.consecutive_failures:
                log.info("API reachable again; resuming full-rate shipping")
            self.consecutive_failures = 0
            self._resume_mono = None
            return
        if not any(r.outcome in (Outcome.RETRY, Outcome.AUTH) for r in results):
            return  # nothing was asked of the API (e.g. only unencodable documents)
        self.consecutive_failures += 1
        hinted = [r.retry_after for r in results if r.retry_after is not None]
        delay = decide(
            self.policy if hinted else self._probe_policy,
            attempts=self.consecutive_failures - 1,
            age=0.0,
            retry_after=max(hinted) if hinted else None,
            rng=self._rng,
        ).delay
        self._resume_mono = self._mono() + delay
        if self.consecutive_failures in (1, 5) or self.consecutive_failures % 20 == 0:
            log.warning(
                "API not accepting documents (%s); pausing %.1fs, probing with one document",
                self.last_error or "no answer",
                delay,
            )

    # ------------------------------------------------------------------ one item

    async def _guarded(self, item: Any, delivered: list[int]) -> _Result:
        """_ship_item, but a failure of this item never fails the pass."""
        try:
            return await self._ship_item(item, delivered)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = f"shipping {item.idempotency_key} failed: {type(exc).__name__}: {exc}"
            self._note_error(error)
            log.exception("shipping %s failed; it stays queued", item.idempotency_key)
            # status 0: not an answer of the API, so it does not close the circuit
            return _Result(Outcome.RETRY, 0, None, error)

    async def _ship_item(self, item: Any, delivered: list[int]) -> _Result:
        async with self._sem:
            sent_at = self._clock()
            try:
                doc, body = _encode(_row(item), sent_at)
            except (TypeError, ValueError) as exc:
                # A document we cannot even serialize will never succeed: set it aside.
                reason = "invalid_payload"
                error = f"cannot encode document: {type(exc).__name__}: {exc}"[:500]
                await self.store.outbox_dead(item.id, None, error, reason)
                self.dead_total += 1
                self.metrics.dead_letters.labels(self.kind, reason).inc()
                self._note_error(error)
                log.error("dead-lettered %s: %s", item.idempotency_key, error)
                return _Result(Outcome.DEAD, 0, None, error)
            headers = build_headers(
                self.api.api_key,
                version=self.identity.version,
                idempotency_key=item.idempotency_key,
            )
            self.last_attempt_at = sent_at
            t0 = time.perf_counter()
            try:
                resp = await self.transport.post_json(self.api.url, body, headers)
            except TransportError as exc:
                elapsed = time.perf_counter() - t0
                result = _Result(Outcome.RETRY, 0, None, f"{exc.reason}: {exc}")
                self.metrics.api_request_duration_seconds.labels(self.kind, exc.reason).observe(
                    elapsed
                )
                self.metrics.api_retries.labels(self.kind, exc.reason).inc()
                await self._retry(item, result)
                return result
            elapsed = time.perf_counter() - t0
            return await self._handle_response(item, doc, resp, elapsed, delivered)

    async def _handle_response(
        self,
        item: Any,
        doc: Mapping[str, Any],
        resp: Response,
        elapsed: float,
        delivered: list[int],
    ) -> _Result:
        now = self._clock()
        outcome = classify(resp.status)
        self.metrics.api_request_duration_seconds.labels(self.kind, outcome.value).observe(elapsed)
        if outcome is Outcome.DELIVERED:
            delivered.append(item.id)
            self.delivered_total += 1
            self.last_success_at = now
            if self.kind == "call":
                self.metrics.calls_shipped.labels(str(doc.get("ship_phase", "unknown"))).inc()
            if self.auth_failed:
                self.auth_failed = False
                self.metrics.api_auth_failed.set(0)
                log.info("API key accepted again")
            log.debug("delivered %s (HTTP %d)", item.idempotency_key, resp.status)
            return _Result(outcome, resp.status)

        text = redact_text(resp.text or "", self.api.api_key)
        error = f"HTTP {resp.status}: {_one_line(text)[:200]}"
        if outcome is Outcome.DEAD:
            reason = f"http_{resp.status}"
            await self.store.outbox_dead(item.id, resp.status, text[:MAX_BODY_KEPT], reason)
            self.dead_total += 1
            self.metrics.dead_letters.labels(self.kind, reason).inc()
            self._note_error(error, now)
            log.warning("dead-lettered %s: HTTP %d (permanent)", item.idempotency_key, resp.status)
            log.debug("dead-letter body for %s: %s", item.idempotency_key, text[:500])
            return _Result(outcome, resp.status, None, error)

        retry_after = self.policy.wait_hint(resp.header("Retry-After"), now)
        result = _Result(outcome, resp.status, retry_after, error)
        if outcome is Outcome.AUTH:
            if not self.auth_failed:
                log.error(
                    "API rejected the key %s (HTTP %d); documents are kept and retried "
                    "with backoff",
                    redact_text(self.api.api_key or "", self.api.api_key),
                    resp.status,
                )
            self.auth_failed = True
            self.metrics.api_auth_failed.set(1)
        self.metrics.api_retries.labels(self.kind, f"http_{resp.status}").inc()
        await self._retry(item, result)
        return result

    async def _retry(self, item: Any, result: _Result) -> None:
        now = self._queue_clock()
        self._note_error(result.error, now)
        attempts = int(item.attempts or 0)
        age = (now - _aware(item.created_at)).total_seconds()
        decision = decide(
            self.policy, attempts=attempts, age=age, retry_after=result.retry_after, rng=self._rng
        )
        if decision.give_up:
            reason = "retry_horizon"
            body = result.error[:MAX_BODY_KEPT]
            await self.store.outbox_dead(item.id, result.status or None, body, reason)
            self.dead_total += 1
            self.metrics.dead_letters.labels(self.kind, reason).inc()
            log.warning(
                "dead-lettered %s: still failing after %.0fh and %d attempts (%s)",
                item.idempotency_key,
                self.policy.horizon / 3600,
                attempts + 1,
                result.error[:80],
            )
            return
        next_at = now + timedelta(seconds=decision.delay)
        await self.store.outbox_retry(item.id, next_at, result.error[:MAX_BODY_KEPT])
        self.retry_total += 1
        log.debug("retry %s at %s (%s)", item.idempotency_key, next_at.isoformat(), result.error)

    def _note_error(self, error: str, now: datetime | None = None) -> None:
        self.last_error = redact_text(error, self.api.api_key)
        self.last_error_at = now or self._clock()

    # ------------------------------------------------------------------ stats / health

    async def _maybe_refresh_stats(self) -> None:
        mono = time.monotonic()
        # every stats_interval, or less often when counting costs more (a deep outbox):
        # at most 5 % of the store's time goes to the gauges
        every = max(self.stats_interval, 20 * self._stats_cost)
        if self._last_stats_mono is not None and mono - self._last_stats_mono < every:
            return
        self._last_stats_mono = mono
        try:
            await self.refresh_stats(self._clock())
        except Exception as exc:
            log.warning("outbox stats failed: %s", exc)
        self._stats_cost = time.monotonic() - mono

    async def refresh_stats(self, now: datetime) -> None:
        """Read store.stats(now) into the gauges and the readiness inputs."""
        stats = await self.store.stats(now)
        by_kind = getattr(stats, "outbox_by_kind", None)
        if isinstance(by_kind, Mapping):
            kinds = {str(k): int(v) for k, v in by_kind.items()}
            for k in self._kinds_seen - kinds.keys():
                kinds[k] = 0  # drained kinds go back to 0
            kinds.setdefault(self.kind, 0)
            for k, v in kinds.items():
                self.metrics.outbox_depth.labels(k).set(v)
            self._kinds_seen = set(kinds)
            self.outbox_depth = kinds[self.kind]
        else:
            self.outbox_depth = int(getattr(stats, "outbox_depth", 0) or 0)
            self.metrics.outbox_depth.labels(self.kind).set(self.outbox_depth)
        age = _as_seconds(getattr(stats, "oldest_undelivered_age", None))
        self.oldest_undelivered_age = age
        self.metrics.oldest_undelivered_seconds.set(age or 0.0)
        dead = getattr(stats, "dead_letters", None)
        if dead is not None:
            self.dead_letters_stored = int(dead)
            self.metrics.dead_letters_stored.set(int(dead))

    def is_stuck(self, now: datetime | None = None) -> bool:
        """No success for `stuck_after` s while something has waited that long."""
        now = _aware(now or self._clock())
        if self.outbox_depth <= 0:
            return False
        age = self.oldest_undelivered_age
        if age is not None and age < self.stuck_after:
            return False
        since = self.last_success_at or self.started_at
        return (now - since).total_seconds() >= self.stuck_after

    @property
    def stuck(self) -> bool:
        return self.is_stuck()

    def readiness_problems(self, now: datetime | None = None) -> list[str]:
        """Reasons the shipper makes the agent not ready (empty = fine)."""
        problems: list[str] = []
        if self.auth_failed:
            problems.append("api key rejected (HTTP 401/403): check API_KEY")
        if self.is_stuck(now):
            problems.append(
                f"shipper stuck: no delivery for {self.stuck_after:.0f}s with "
                f"{self.outbox_depth} documents waiting (last error: {self.last_error or '-'})"
            )
        return problems

    def status(self) -> dict[str, Any]:
        """JSON-ready summary for /status."""

        def iso(dt: datetime | None) -> str | None:
            return dt.isoformat() if dt else None

        return {
            "url": redact_text(self.api.url, self.api.api_key),
            "last_success_at": iso(self.last_success_at),
            "last_attempt_at": iso(self.last_attempt_at),
            "last_error": self.last_error,
            "last_error_at": iso(self.last_error_at),
            "auth_failed": self.auth_failed,
            "stuck": self.is_stuck(),
            "consecutive_failures": self.consecutive_failures,
            "paused_until": iso(self.paused_until),
            "outbox_depth": self.outbox_depth,
            "oldest_undelivered_seconds": self.oldest_undelivered_age,
            "dead_letters": self.dead_letters_stored,
            "delivered": self.delivered_total,
            "retried": self.retry_total,
            "dead_lettered": self.dead_total,
        }


# The head of an outbox row written by calls.document.encode_document: the volatile keys
# first, so a row handed over as text gets its shipped_at without a parse.
_ROW_HEAD = re.compile(r'\{"revision":(-?\d+),"ship_phase":"([a-z]*)","shipped_at":"([^"\\]*)"')


def _row(item: Any) -> Any:
    """What the store handed out: the row's text (state.OutboxItem.payload_text, spliced
    without a parse), else the parsed document (stores that keep no text)."""
    text = getattr(item, "payload_text", None)
    return item.payload if text is None else text


def _encode(payload: Any, sent_at: datetime) -> tuple[dict[str, Any], bytes]:
    """The document with `shipped_at` stamped (for a row given as text in the outbox's own
    form: its revision and ship_phase only), and its JSON body (UTF-8)."""
    stamp = sent_at.isoformat(timespec="seconds")
    if isinstance(payload, (bytes, str)):
        text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
        m = _ROW_HEAD.match(text)
        if m is not None:
            body = text[: m.start(3)] + stamp + text[m.end(3) :]
            with contextlib.suppress(UnicodeEncodeError):
                return {"revision": int(m[1]), "ship_phase": m[2]}, body.encode("utf-8")
        payload = json.loads(text)
    doc = dict(payload)
    doc["shipped_at"] = stamp
    raw = json_bytes(doc)
    if raw is not None:
        return doc, raw
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    try:
        return doc, text.encode("utf-8")
    except UnicodeEncodeError:
        # lone surrogates (undecodable PBX bytes that slipped through): \u escapes
        return doc, json.dumps(doc, separators=(",", ":")).encode("ascii")


def _one_line(text: str) -> str:
    return " ".join(text.split())


async def _wait(stop: asyncio.Event, wake: asyncio.Event | None, timeout: float) -> None:
    """Sleep up to `timeout`, returning early when stop (or wake) is set."""
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
