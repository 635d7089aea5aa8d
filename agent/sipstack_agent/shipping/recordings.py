"""The outbox's second worker: recording audio (outbox kind "recording").

`recordings.RecordingManager` queues one item per ready recording
(`recording_queue.upload_payload`); `RecordingShipper.run(stop)`, a stage the
agent supervises like the call `Shipper`, sends them:

- multipart POST to the recording endpoint config computed (`api.recording_url`),
  text fields first in contract order, the audio last in field `audio`,
  streamed from disk by the transport;
- at most RECORDING_UPLOAD_CONCURRENCY requests at a time;
- the call shipper's classification (`outbox.classify`) and the one retry /
  dead-letter decision (`retry.decide`, on `retry.StepFreeClock`): backoff with
  full jitter, Retry-After clamped to the backoff cap, API_RETRY_HORIZON
  counted in age AND attempts, so a clock step neither gives up nor delays an
  upload; a Retry-After pauses the whole worker, on the monotonic clock;
- permanent 4xx -> dead letter; a file that left RECORDING_PATHS or vanished
  -> dead letter (the file side is `recording_queue.FileAccess`,
  recordings.files.ConfinedFiles in the agent);
- after a 2xx: the RecordingFile is stored again with uploaded=True (the
  call's next document says so) and, with DELETE_RECORDINGS_AFTER_UPLOAD,
  the file is deleted if it is still the same regular file.

Its state is in /status `recording_uploader`; a rejected key is a readiness
problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sipstack_agent.config import ApiSettings, Identity, RecordingSettings
from sipstack_agent.metrics import Metrics
from sipstack_agent.model import RecordingFile
from sipstack_agent.recording_queue import KIND, FileAccess, LocatedFile, recording_from_payload
from sipstack_agent.rules.redact import redact_text
from sipstack_agent.shipping.client import Transport, TransportError, build_headers
from sipstack_agent.shipping.outbox import DISK_FULL_PAUSE, Outcome, classify
from sipstack_agent.shipping.retry import RetryPolicy, StepFreeClock, decide
from sipstack_agent.state import StateDiskFull

log = logging.getLogger("sipstack_agent.recordings")


class QueuedItem(Protocol):
    """An outbox item as the worker reads it (state.OutboxItem)."""

    @property
    def id(self) -> int: ...
    @property
    def call_key(self) -> str: ...
    @property
    def idempotency_key(self) -> str: ...
    @property
    def payload(self) -> Mapping[str, Any]: ...
    @property
    def attempts(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...


class RecordingOutbox(Protocol):
    """The part of `state.StateStore` the recording worker uses."""

    async def outbox_due(
        self,
        now: datetime,
        limit: int = ...,
        kind: str | None = ...,
        *,
        exclude: Iterable[int] = ...,
    ) -> Sequence[QueuedItem]: ...

    async def outbox_delivered(self, item_id: int) -> None: ...

    async def outbox_retry(self, item_id: int, next_attempt_at: datetime, error: str) -> None: ...

    async def outbox_dead(
        self, item_id: int, status: int | None, body: str, reason: str
    ) -> bool: ...

    async def add_recordings(self, linkedid: str, recordings: Sequence[RecordingFile]) -> int: ...


def multipart_fields(payload: Mapping[str, Any], file_size: int) -> list[tuple[str, str]]:
    """Text fields of ingest-api.md, in contract order (the audio part follows them)."""
    uniqueid = str(payload.get("uniqueid") or "")
    filename = str(payload.get("filename") or "")
    start = str(payload.get("start_time") or payload.get("started_at") or "")
    return [
        ("recording_id", uniqueid or filename),
        ("linkedid", str(payload.get("linkedid") or "")),
        ("call_id", uniqueid or str(payload.get("linkedid") or "")),
        ("src_number", str(payload.get("src_number") or "")),
        ("dst_number", str(payload.get("dst_number") or "")),
        ("direction", str(payload.get("direction") or "")),
        ("duration", str(int(payload.get("duration") or 0))),
        ("start_time", start),
        ("tenant_name", str(payload.get("tenant_name") or "")),
        ("file_name", filename),
        ("file_size", str(file_size)),
        ("original_file_path", str(payload.get("original_file_path") or "")),
    ]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


class RecordingShipper:
    """Sends queued recordings. Construct once per agent; `await run(stop)`.

    `store`: the StateStore; `transport`: the Transport shared with the call
    shipper; `files`: the file side (recordings.files.ConfinedFiles);
    `settings`: RecordingSettings (concurrency, delete); `api`: ApiSettings
    (key, recording_url, backoff, horizon); `identity`: the User-Agent version.
    """

    def __init__(
        self,
        store: RecordingOutbox,
        transport: Transport,
        settings: RecordingSettings,
        api: ApiSettings,
        identity: Identity,
        metrics: Metrics,
        *,
        files: FileAccess,
        clock: Callable[[], datetime] = _utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        idle_interval: float = 1.0,
    ) -> None:
        self.store = store
        self.transport = transport
        self.files = files
        self.settings = settings
        self.api = api
        self.identity = identity
        self.metrics = metrics
        self.url = api.recording_url  # computed once by config (rules.api_urls)
        self.concurrency = max(1, int(settings.upload_concurrency))
        self.idle_interval = idle_interval
        self._clock = clock
        self._queue_clock = StepFreeClock(clock, monotonic)  # due times and retry schedule
        self._mono = monotonic
        self.policy = RetryPolicy.of(api)
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._inflight: dict[int, asyncio.Task[str]] = {}
        # Uploaded, but the store refused to record it (a full disk): recorded before
        # anything else starts, never uploaded again meanwhile.
        self._unrecorded: dict[int, tuple[QueuedItem, LocatedFile]] = {}
        self._resume_mono: float | None = None  # a Retry-After pauses uploads until then
        self.uploaded_total = 0
        self.dead_total = 0
        self.retry_total = 0
        self.deleted_total = 0
        self.last_error: str | None = None
        self.last_success_at: datetime | None = None
        self.auth_failed = False  # the API rejects the key (401/403); uploads are kept

    def notify(self) -> None:
        """Wake the worker now (called after an upload was queued)."""
        self._wake.set()

    @property
    def paused_until(self) -> datetime | None:
        """When a Retry-After pause ends, on the wall clock (for status)."""
        if self._resume_mono is None:
            return None
        return self._clock() + timedelta(seconds=self._resume_mono - self._mono())

    def _pause_left(self) -> float:
        if self._resume_mono is None:
            return 0.0
        return max(0.0, self._resume_mono - self._mono())

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    # ------------------------------------------------------------------ health

    def readiness_problems(self) -> list[str]:
        if self.auth_failed:
            url = redact_text(self.url, self.api.api_key)
            return [f"recording uploads: api key rejected (HTTP 401/403) by {url}"]
        return []

    def status(self) -> dict[str, Any]:
        """/status `recording_uploader`."""
        paused = self.paused_until
        return {
            "url": redact_text(self.url, self.api.api_key),
            "in_flight": self.inflight,
            "uploaded": self.uploaded_total,
            "retried": self.retry_total,
            "dead_lettered": self.dead_total,
            "deleted": self.deleted_total,
            "auth_failed": self.auth_failed,
            "paused_until": paused.isoformat() if paused else None,
            "last_success_at": self.last_success_at.isoformat() if self.last_success_at else None,
            "last_error": self.last_error,
        }

    # ------------------------------------------------------------------ loop

    async def run(self, stop: asyncio.Event) -> None:
        """Upload until `stop`; an upload cut short stays queued (Idempotency-Key)."""
        log.info(
            "recording uploader started: %s (concurrency %d)",
            redact_text(self.url, self.api.api_key),
            self.concurrency,
        )
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    await self.fill()
                except asyncio.CancelledError:
                    raise
                except StateDiskFull as exc:
                    if self.last_error != str(exc):
                        log.warning(
                            "%d recordings uploaded but not yet recorded so (%s); recording "
                            "them again every %g s before uploading more",
                            len(self._unrecorded),
                            exc,
                            DISK_FULL_PAUSE,
                        )
                    self.last_error = str(exc)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), DISK_FULL_PAUSE)
                    continue
                except Exception:
                    log.exception("recording upload pass failed")
                waiters: list[asyncio.Future[Any]] = [
                    asyncio.ensure_future(stop.wait()),
                    asyncio.ensure_future(self._wake.wait()),
                    *self._inflight.values(),
                ]
                timeout = self.idle_interval
                if self._resume_mono is not None:
                    timeout = max(0.05, self._pause_left())
                try:
                    await asyncio.wait(
                        waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    for w in waiters[:2]:
                        w.cancel()
        finally:
            tasks = list(self._inflight.values())
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t
            self._inflight.clear()
            log.info("recording uploader stopped")

    async def fill(self) -> int:
        """Start uploads for due items up to the concurrency; returns how many started."""
        for item_id, (done, f) in list(self._unrecorded.items()):
            await self._record_upload(done, f)  # may raise again: nothing new starts
            del self._unrecorded[item_id]
        now = self._queue_clock()
        if self._pause_left() > 0:
            return 0
        self._resume_mono = None
        for i, t in list(self._inflight.items()):
            if t.done():
                self._inflight.pop(i, None)
        free = self.concurrency - len(self._inflight)
        if free <= 0:
            return 0
        items = await self.store.outbox_due(now, free, kind=KIND, exclude=list(self._inflight))
        for item in items:
            task = asyncio.create_task(self.upload_item(item))
            self._inflight[item.id] = task
            task.add_done_callback(self._done_callback(item.id))
        return len(items)

    def _done_callback(self, item_id: int) -> Callable[[asyncio.Task[str]], None]:
        def done(task: asyncio.Task[str]) -> None:
            self._inflight.pop(item_id, None)
            if not task.cancelled() and (exc := task.exception()) is not None:
                # one upload's failure is not the worker's: logged, the item stays queued
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("recording upload of outbox item %d failed: %s", item_id, exc)

        return done

    async def drain(self, max_passes: int = 1000) -> None:
        """Upload everything due now and wait for it (tests, `check`)."""
        for _ in range(max_passes):
            started = await self.fill()
            if self._inflight:
                await asyncio.gather(*self._inflight.values(), return_exceptions=True)
            elif not started:
                return

    # ------------------------------------------------------------------ one item

    async def upload_item(self, item: QueuedItem) -> str:
        """Send one queued recording; returns the outcome ('delivered', 'retry', 'dead')."""
        payload = item.payload
        f = await asyncio.to_thread(self.files.locate, str(payload.get("file_path") or ""))
        if f.refused is not None:
            self.metrics.recording_paths_refused.inc()
            return await self._dead(item, None, "", "path_refused", f.refused)
        if f.missing is not None or f.real_path is None:
            return await self._dead(item, None, "", "file_missing", f.missing or "")
        headers = build_headers(
            self.api.api_key,
            version=self.identity.version,
            idempotency_key=item.idempotency_key,
            content_type=None,
        )
        fields = multipart_fields(payload, f.size)
        started = time.monotonic()
        try:
            resp = await self.transport.post_multipart(
                self.url, fields, f.real_path, "audio", f.content_type, headers
            )
        except TransportError as exc:
            self._observe(started, exc.reason)
            return await self._retry(item, exc.reason, str(exc), None)
        except OSError as exc:  # the file went away while being read
            self._observe(started, "file_error")
            return await self._retry(item, "file_error", f"{type(exc).__name__}: {exc}", None)
        outcome = classify(resp.status)
        self._observe(started, outcome.value)
        if outcome is Outcome.DELIVERED:
            self.auth_failed = False
            await self._delivered(item, f)
            return "delivered"
        if outcome is Outcome.DEAD:
            return await self._dead(item, resp.status, resp.text, f"http_{resp.status}", "")
        retry_after = self.policy.wait_hint(resp.header("Retry-After"), self._clock())
        reason = "auth" if outcome is Outcome.AUTH else f"http_{resp.status}"
        self.auth_failed = outcome is Outcome.AUTH
        return await self._retry(item, reason, f"HTTP {resp.status}", retry_after)

    def _observe(self, started: float, outcome: str) -> None:
        self.metrics.api_request_duration_seconds.labels(KIND, outcome).observe(
            time.monotonic() - started
        )

    async def _delivered(self, item: QueuedItem, f: LocatedFile) -> None:
        try:
            await self._record_upload(item, f)
        except StateDiskFull:
            self._unrecorded[item.id] = (item, f)
            raise

    async def _record_upload(self, item: QueuedItem, f: LocatedFile) -> None:
        """The store's part of an upload the API accepted (both writes idempotent), then
        the counters and the file's deletion."""
        await self.store.outbox_delivered(item.id)
        payload = item.payload  # state.OutboxItem parses its text on every access
        rec = replace(recording_from_payload(payload, uploaded=True), file_size=f.size)
        linkedid = item.call_key or str(payload.get("linkedid"))
        await self.store.add_recordings(linkedid, [rec])
        self.uploaded_total += 1
        self.last_success_at = self._clock()
        self.metrics.recordings_uploaded.inc()
        self.metrics.recording_upload_bytes.inc(f.size)
        log.info("recording uploaded: %s (%d bytes)", os.path.basename(f.path), f.size)
        if self.settings.delete_after_upload and await asyncio.to_thread(
            self.files.delete_uploaded, f
        ):
            self.deleted_total += 1

    async def _retry(
        self, item: QueuedItem, reason: str, error: str, retry_after: float | None
    ) -> str:
        now = self._queue_clock()
        decision = decide(
            self.policy,
            attempts=int(item.attempts),
            age=(now - _aware(item.created_at)).total_seconds(),
            retry_after=retry_after,
            rng=self._rng,
        )
        if decision.give_up:
            return await self._dead(item, None, error, "retry_horizon", error)
        next_at = now + timedelta(seconds=decision.delay)
        self.metrics.recording_upload_failures.labels(reason).inc()
        self.metrics.api_retries.labels(KIND, reason).inc()
        self.retry_total += 1
        self.last_error = error
        await self.store.outbox_retry(item.id, next_at, redact_text(error, self.api.api_key))
        if retry_after is not None:  # 429/503 with Retry-After: the whole worker waits
            self._resume_mono = self._mono() + decision.delay
        return "retry"

    async def _dead(
        self, item: QueuedItem, status: int | None, body: str, reason: str, detail: str
    ) -> str:
        await self.store.outbox_dead(item.id, status, redact_text(body, self.api.api_key), reason)
        self.dead_total += 1
        self.metrics.recording_upload_failures.labels(reason).inc()
        self.metrics.dead_letters.labels(KIND, reason).inc()
        self.last_error = f"{reason}: {detail}" if detail else reason
        log.warning(
            "recording dead-lettered (%s): %s",
            reason,
            os.path.basename(str(item.payload.get("file_path") or "")),
        )
        return "dead"
