"""Upload of recording audio from the durable queue (outbox kind "recording").

`RecordingManager` enqueues one item per ready recording (payload: see
`upload_payload`); `RecordingUploader.run(stop)` sends them:

- multipart POST to the recording endpoint of the region (ca1 -> api-ca1,
  never dev unless REGION=dev), text fields first, the audio last in field
  `audio`, streamed from disk by the transport;
- at most RECORDING_UPLOAD_CONCURRENCY requests at a time;
- the classification of the call shipper (`shipping.outbox.classify`) and
  its retry / dead-letter decision (`shipping.retry.decide`: backoff with
  full jitter, Retry-After clamped to the backoff cap, API_RETRY_HORIZON
  counted in age AND attempts so a clock step never gives up an upload);
  a Retry-After pauses the whole uploader, on the monotonic clock;
- permanent 4xx -> dead letter; a file that left the tree or vanished -> dead letter;
- after a 2xx: the RecordingFile is stored again with uploaded=True (the
  call's next document says so) and, with DELETE_RECORDINGS_AFTER_UPLOAD,
  the file is deleted if it is still the same regular file inside
  RECORDING_PATHS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sipstack_agent.config import ApiSettings, Identity, RecordingSettings
from sipstack_agent.metrics import Metrics
from sipstack_agent.model import RecordingFile
from sipstack_agent.recordings.paths import (
    content_type_for,
    real_roots,
    resolve_under_roots,
)
from sipstack_agent.rules.redact import redact_text
from sipstack_agent.shipping.client import (
    Transport,
    TransportError,
    build_headers,
)
from sipstack_agent.shipping.outbox import Outcome, classify
from sipstack_agent.shipping.retry import RetryPolicy, decide

log = logging.getLogger("sipstack_agent.recordings")

KIND = "recording"


class UploadStore(Protocol):
    async def outbox_due(
        self, now: datetime, limit: int = 100, kind: str | None = None, **kw: Any
    ) -> Sequence[Any]: ...

    async def outbox_delivered(self, item_id: int) -> None: ...

    async def outbox_retry(self, item_id: int, next_attempt_at: datetime, error: str) -> None: ...

    async def outbox_dead(
        self, item_id: int, status: int | None, body: str, reason: str
    ) -> Any: ...

    async def add_recordings(self, linkedid: str, recordings: Sequence[RecordingFile]) -> Any: ...


def upload_payload(
    rec: RecordingFile,
    *,
    linkedid: str,
    original_path: str,
    mtime_ns: int,
    call: Mapping[str, Any],
) -> dict[str, Any]:
    """The queued item: everything the upload needs, so it survives restarts alone."""
    return {
        "file_path": rec.file_path,
        "filename": rec.filename,
        "file_size": rec.file_size or 0,
        "mtime_ns": mtime_ns,
        "source": rec.source,
        "started_at": rec.started_at.isoformat() if rec.started_at else "",
        "uniqueid": rec.uniqueid,
        "linkedid": linkedid,
        "original_file_path": original_path or rec.file_path,
        "src_number": str(call.get("src_number") or ""),
        "dst_number": str(call.get("dst_number") or ""),
        "direction": str(call.get("direction") or ""),
        "duration": int(call.get("duration") or 0),
        "start_time": str(call.get("start_time") or ""),
        "tenant_name": str(call.get("tenant_name") or ""),
    }


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


def recording_from_payload(payload: Mapping[str, Any], *, uploaded: bool) -> RecordingFile:
    started = payload.get("started_at") or ""
    return RecordingFile(
        filename=str(payload.get("filename") or ""),
        file_path=str(payload.get("file_path") or ""),
        source=str(payload.get("source") or ""),
        file_size=int(payload.get("file_size") or 0),
        started_at=datetime.fromisoformat(started) if started else None,
        uploaded=uploaded,
        uniqueid=str(payload.get("uniqueid") or ""),
    )


def _utcnow() -> datetime:
    return datetime.now(UTC)


class RecordingUploader:
    """Sends queued recordings. Construct once per agent; `await run(stop)`.

    `store`: the StateStore; `transport`: shipping.client.Transport (the
    AiohttpTransport shared with the shipper is fine); `settings`:
    RecordingSettings (concurrency, delete, paths); `api`: ApiSettings (key,
    region/URL, backoff, horizon); `identity`: for the User-Agent version.
    """

    def __init__(
        self,
        store: UploadStore,
        transport: Transport,
        settings: RecordingSettings,
        api: ApiSettings,
        identity: Identity,
        metrics: Metrics,
        *,
        clock: Callable[[], datetime] = _utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        idle_interval: float = 1.0,
        lease: float | None = None,
    ) -> None:
        self.store = store
        self.transport = transport
        self.settings = settings
        self.api = api
        self.identity = identity
        self.metrics = metrics
        self.url = api.recording_url  # computed once by config (rules.api_urls)
        self.roots = real_roots(settings.paths)
        self.concurrency = max(1, int(settings.upload_concurrency))
        self.idle_interval = idle_interval
        self.lease = lease  # optional store lease; in-flight ids are excluded anyway
        self._clock = clock
        self._mono = monotonic
        self.policy = RetryPolicy.of(api)
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._inflight: dict[int, asyncio.Task[str]] = {}
        self._resume_mono: float | None = None  # a Retry-After pauses uploads until then
        self.uploaded_total = 0
        self.dead_total = 0
        self.retry_total = 0
        self.deleted_total = 0
        self.last_error: str | None = None
        self.auth_failed = False  # the API rejects the key (401/403); uploads are kept

    def notify(self) -> None:
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
        now = self._clock()
        if self._pause_left() > 0:
            return 0
        self._resume_mono = None
        for i, t in list(self._inflight.items()):
            if t.done():
                self._inflight.pop(i, None)
        free = self.concurrency - len(self._inflight)
        if free <= 0:
            return 0
        items = await self.store.outbox_due(
            now, free, kind=KIND, lease=self.lease, exclude=list(self._inflight)
        )
        for item in items:
            task = asyncio.create_task(self.upload_item(item))
            self._inflight[item.id] = task
            task.add_done_callback(self._done_callback(item.id))
        return len(items)

    def _done_callback(self, item_id: int) -> Callable[[asyncio.Task[str]], None]:
        def done(task: asyncio.Task[str]) -> None:
            self._inflight.pop(item_id, None)
            if not task.cancelled() and (exc := task.exception()) is not None:
                # one upload's failure is not the uploader's: logged, the item stays queued
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

    async def upload_item(self, item: Any) -> str:
        """Send one queued recording; returns the outcome ('delivered', 'retry', 'dead')."""
        payload: Mapping[str, Any] = item.payload
        path = str(payload.get("file_path") or "")
        res = resolve_under_roots(path, self.roots)
        if res.refused is not None:
            self.metrics.recording_paths_refused.inc()
            return await self._dead(item, None, "", "path_refused", res.refused)
        if not res.exists or res.real_path is None:
            return await self._dead(item, None, "", "file_missing", "file not found")
        real = res.real_path
        try:
            before = await asyncio.to_thread(os.stat, real)
        except OSError as exc:
            return await self._dead(item, None, "", "file_missing", str(exc))
        headers = build_headers(
            self.api.api_key,
            version=self.identity.version,
            idempotency_key=item.idempotency_key,
            content_type=None,
        )
        fields = multipart_fields(payload, before.st_size)
        started = time.monotonic()
        try:
            resp = await self.transport.post_multipart(
                self.url, fields, real, "audio", content_type_for(real), headers
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
            await self._delivered(item, payload, real, before)
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

    async def _delivered(
        self, item: Any, payload: Mapping[str, Any], real: str, before: os.stat_result
    ) -> None:
        await self.store.outbox_delivered(item.id)
        self.uploaded_total += 1
        self.metrics.recordings_uploaded.inc()
        self.metrics.recording_upload_bytes.inc(before.st_size)
        rec = replace(recording_from_payload(payload, uploaded=True), file_size=before.st_size)
        await self.store.add_recordings(item.call_key or str(payload.get("linkedid")), [rec])
        log.info("recording uploaded: %s (%d bytes)", os.path.basename(real), before.st_size)
        if self.settings.delete_after_upload:
            await asyncio.to_thread(self._delete, real, before)

    def _delete(self, real: str, before: os.stat_result) -> bool:
        """Delete an uploaded file: only inside RECORDING_PATHS, only the bytes we sent."""
        res = resolve_under_roots(real, self.roots)
        if res.refused is not None or res.real_path != real:
            log.warning("not deleting %s: outside RECORDING_PATHS", real)
            return False
        try:
            st = os.lstat(real)
        except OSError:
            return False
        import stat as _stat

        if not _stat.S_ISREG(st.st_mode):
            return False
        if (st.st_size, st.st_mtime_ns, st.st_ino) != (
            before.st_size,
            before.st_mtime_ns,
            before.st_ino,
        ):
            log.warning("not deleting %s: it changed during the upload", real)
            return False
        try:
            os.unlink(real)
        except OSError as exc:
            log.warning("could not delete %s: %s", real, exc)
            return False
        self.deleted_total += 1
        return True

    async def _retry(self, item: Any, reason: str, error: str, retry_after: float | None) -> str:
        now = self._clock()
        created = item.created_at
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        decision = decide(
            self.policy,
            attempts=int(item.attempts),
            age=(now - created).total_seconds(),
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
        if retry_after is not None:  # 429/503 with Retry-After: the whole uploader waits
            self._resume_mono = self._mono() + decision.delay
        return "retry"

    async def _dead(
        self, item: Any, status: int | None, body: str, reason: str, detail: str
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
