"""A local stand-in for the SIPSTACK ingest API (tests, demo, bench).

Implements ../shared/spec/ingest-api.md:

- `POST /v1/mqs/connectors/asterisk/calls`: Bearer key, JSON content type,
  one JSON object validated against the call-document schema (400 with a
  reason otherwise), stored once per Idempotency-Key (a replay answers 200
  and is not stored again; a new document answers 202).
- `POST /v1/mqs/recording`: multipart, text fields first and the `audio`
  part last; the audio is streamed to disk and its size checked against the
  `file_size` field.

Fault injection (tests): `POST /_control` with a JSON `FaultPlan`
(`{"fail_status": 503, "fail_count": 5, "retry_after": 1, "fail_linkedid":
"...", "fail_path": "calls", "delay": 0, "drop": false}`; `{"reset": true}`
clears it), `GET /_stats`, `GET /_calls[?linkedid=X]`, `GET /_recordings`,
`GET /_rejects`. The same plan can be given to the constructor. `GET /` is a page
(web/receiver.html) showing the calls received as a table.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import re
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import IO, Any

from aiohttp import BodyPartReader, web

from sipstack_agent.receiver.db import ReceiverDB
from sipstack_agent.receiver.schema import make_validator
from sipstack_agent.rules.api_urls import CALLS_PATH, RECORDING_PATH
from sipstack_agent.web import page

log = logging.getLogger("sipstack_agent.receiver")

REQUIRED_RECORDING_FIELDS = ("recording_id", "linkedid", "file_name", "file_size")
MAX_FIELD_BYTES = 64 * 1024
AUDIO_CHUNK = 256 * 1024
_KEY_RE = re.compile(r"^sk_[A-Za-z0-9_\-]{4,}$")


@dataclass
class FaultPlan:
    """What the receiver should do wrong, and how often.

    A request *matches* when its endpoint is `fail_path` (calls | recording |
    None = both) and, with `fail_linkedid` set, its linkedid is that one.
    While `fail_count` (None = unlimited) is not used up, a matching request
    waits `delay` seconds, then is dropped without an answer (`drop`) or
    answered with `fail_status` (plus `Retry-After: retry_after`), or, with
    neither, processed normally after the delay.
    """

    fail_status: int | None = None
    fail_count: int | None = None
    retry_after: str | None = None
    fail_linkedid: str | None = None
    fail_path: str | None = None
    delay: float = 0.0
    drop: bool = False
    body: str | None = None

    @property
    def active(self) -> bool:
        if self.fail_status is None and not self.drop and self.delay <= 0:
            return False
        return self.fail_count is None or self.fail_count > 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaultPlan:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known - {"reset"}
        if unknown:
            raise ValueError(f"unknown fault options: {', '.join(sorted(unknown))}")
        kw = {k: v for k, v in data.items() if k in known}
        if "retry_after" in kw and kw["retry_after"] is not None:
            kw["retry_after"] = str(kw["retry_after"])
        if kw.get("fail_status") is not None:
            kw["fail_status"] = int(kw["fail_status"])
        if kw.get("fail_count") is not None:
            kw["fail_count"] = int(kw["fail_count"])
        if "delay" in kw:
            kw["delay"] = float(kw["delay"] or 0)
        if kw.get("fail_path") not in (None, "calls", "recording"):
            raise ValueError("fail_path must be calls, recording or null")
        return cls(**kw)


class Receiver:
    """The local SIPSTACK API: `url = await Receiver(db).start()`, then `await stop()`."""

    def __init__(
        self,
        db_path: str | Path | None = None,
        *,
        api_key: str | None = None,
        schema: dict[str, Any] | None = None,
        validate: bool = True,
        recordings_dir: str | Path | None = None,
        fail_status: int | None = None,
        fail_count: int | None = None,
        retry_after: str | float | None = None,
        fail_linkedid: str | None = None,
        fail_path: str | None = None,
        delay: float = 0.0,
        drop: bool = False,
    ) -> None:
        self.db = ReceiverDB(db_path)
        self.api_key = api_key
        self.validate = validate
        self.validator = make_validator(schema)
        self.schema_origin = self.validator.origin
        if recordings_dir is not None:
            self.recordings_dir = Path(recordings_dir)
        elif db_path:
            self.recordings_dir = Path(db_path).parent / (Path(db_path).stem + "-recordings")
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="sipstack-receiver-")
            self.recordings_dir = Path(self._tmp.name)
        self.recordings_dir.mkdir(parents=True, exist_ok=True)
        self.faults = FaultPlan(
            fail_status=fail_status,
            fail_count=fail_count,
            retry_after=str(retry_after) if retry_after is not None else None,
            fail_linkedid=fail_linkedid,
            fail_path=fail_path,
            delay=delay,
            drop=drop,
        )
        self.counters: Counter[str] = Counter()
        # Idempotency-Keys received again with another content (`shipped_at` aside)
        self.key_conflicts: list[str] = []
        self.connections: set[int] = set()  # ids of client transports seen (keep-alive checks)
        self.url: str | None = None
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self.app = self._make_app()

    # ------------------------------------------------------------ lifecycle

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post(CALLS_PATH, self._handle_call)
        app.router.add_post(RECORDING_PATH, self._handle_recording)
        app.router.add_get("/", self._handle_index)
        app.router.add_get("/healthz", self._handle_healthz)
        app.router.add_post("/_control", self._handle_control)
        app.router.add_get("/_control", self._handle_get_control)
        app.router.add_get("/_stats", self._handle_stats)
        app.router.add_get("/_calls", self._handle_calls)
        app.router.add_get("/_recordings", self._handle_recordings)
        app.router.add_get("/_rejects", self._handle_rejects)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen; returns the base URL (`http://host:port`). Port 0 picks a free one."""
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        bound_port = sockets[0].getsockname()[1] if sockets else port
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104
        self.url = f"http://{shown}:{bound_port}"
        log.info("receiver listening on %s (schema: %s)", self.url, self.schema_origin)
        return self.url

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.db.close()
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            tmp.cleanup()

    async def __aenter__(self) -> Receiver:
        if self.url is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def calls_url(self) -> str:
        assert self.url, "receiver not started"
        return self.url + CALLS_PATH

    @property
    def recording_url(self) -> str:
        assert self.url, "receiver not started"
        return self.url + RECORDING_PATH

    # ------------------------------------------------------------ faults

    def set_faults(self, **options: Any) -> FaultPlan:
        """Replace the fault plan (same keys as POST /_control)."""
        self.faults = FaultPlan.from_json(options)
        return self.faults

    def reset_faults(self) -> None:
        self.faults = FaultPlan()

    async def _apply_fault(
        self, request: web.Request, endpoint: str, linkedid: str | None
    ) -> web.StreamResponse | None:
        plan = self.faults
        if not plan.active:
            return None
        if plan.fail_path is not None and plan.fail_path != endpoint:
            return None
        if plan.fail_linkedid is not None and plan.fail_linkedid != linkedid:
            return None
        if plan.fail_count is not None:
            plan.fail_count -= 1
        self.counters["injected"] += 1
        if plan.delay > 0:
            # returns early when the receiver stops, so stop() never waits on it
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), plan.delay)
        if plan.drop:
            self.counters["injected_drop"] += 1
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=599)
        if plan.fail_status is None:
            return None
        self.counters[f"injected_{plan.fail_status}"] += 1
        headers = {"Retry-After": plan.retry_after} if plan.retry_after is not None else None
        body = plan.body if plan.body is not None else json.dumps({"error": "injected failure"})
        return web.Response(
            status=plan.fail_status, text=body, headers=headers, content_type="application/json"
        )

    # ------------------------------------------------------------ helpers

    def _note_connection(self, request: web.Request) -> None:
        if request.transport is not None:
            self.connections.add(id(request.transport))

    def _check_auth(self, request: web.Request) -> str | None:
        """None when the Bearer key is acceptable, else the reason."""
        auth = request.headers.get("Authorization", "")
        scheme, _, key = auth.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return "missing Bearer token"
        key = key.strip()
        if self.api_key is not None:
            if not hmac.compare_digest(key.encode(), self.api_key.encode()):
                return "invalid API key"
        elif not _KEY_RE.match(key):
            return "API key must look like sk_..."
        return None

    def _reject(self, endpoint: str, status: int, reason: str, idem: str | None) -> web.Response:
        self.counters["rejected"] += 1
        self.counters[f"rejected_{status}"] += 1
        self.db.insert_reject(endpoint, status, reason, idem)
        return web.json_response({"error": reason}, status=status)

    # ------------------------------------------------------------ endpoints

    async def _handle_call(self, request: web.Request) -> web.StreamResponse:
        self.counters["requests"] += 1
        self.counters["call_requests"] += 1
        self._note_connection(request)
        idem = request.headers.get("Idempotency-Key") or None
        raw = await request.read()
        doc: Any = None
        parse_error: str | None = None
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            parse_error = f"invalid JSON: {exc}"
        linkedid = doc.get("linkedid") if isinstance(doc, dict) else None
        fault = await self._apply_fault(request, "calls", linkedid)
        if fault is not None:
            return fault
        auth_problem = self._check_auth(request)
        if auth_problem:
            return self._reject("calls", 401, auth_problem, idem)
        if request.content_type != "application/json":
            return self._reject("calls", 415, "Content-Type must be application/json", idem)
        if parse_error is not None:
            return self._reject("calls", 400, parse_error, idem)
        if not isinstance(doc, dict):
            return self._reject("calls", 400, "expected one JSON object per request", idem)
        if self.validate:
            problem = self.validator.problem(doc)
            if problem:
                return self._reject("calls", 400, f"invalid document: {problem}", idem)
        first = self.db.call_body(idem) if idem is not None else None
        if first is not None:
            self.counters["duplicates"] += 1
            if _content(json.loads(first)) != _content(doc):
                self.counters["key_conflicts"] += 1  # a key must name one content, always
                self.key_conflicts.append(str(idem))
            return web.json_response({"status": "duplicate"}, status=200)
        stored = self.db.insert_call(doc, raw.decode("utf-8"), idem)
        if not stored:  # raced with an identical key
            self.counters["duplicates"] += 1
            return web.json_response({"status": "duplicate"}, status=200)
        self.counters["accepted"] += 1
        return web.json_response({"status": "accepted"}, status=202)

    async def _handle_recording(self, request: web.Request) -> web.StreamResponse:
        self.counters["requests"] += 1
        self.counters["recording_requests"] += 1
        self._note_connection(request)
        idem = request.headers.get("Idempotency-Key") or None
        fault = await self._apply_fault(request, "recording", None)
        if fault is not None:
            await _drain(request)
            return fault
        auth_problem = self._check_auth(request)
        if auth_problem:
            await _drain(request)
            return self._reject("recording", 401, auth_problem, idem)
        if request.content_type != "multipart/form-data":
            await _drain(request)
            return self._reject("recording", 415, "Content-Type must be multipart/form-data", idem)
        try:
            result = await self._read_recording(request)
        except _BadUpload as exc:
            await _drain(request)
            return self._reject("recording", 400, str(exc), idem)
        fields_, upload_path, received, digest, ctype = result
        tmp_path: Path | None = upload_path
        try:
            for name in REQUIRED_RECORDING_FIELDS:
                if not fields_.get(name):
                    raise _BadUpload(f"missing field {name}")
            try:
                declared = int(fields_["file_size"])
            except ValueError:
                raise _BadUpload("file_size is not an integer") from None
            if declared != received:
                raise _BadUpload(
                    f"file_size mismatch: field says {declared}, received {received} bytes"
                )
            key = idem or f"rec:{fields_['recording_id']}:{fields_['file_name']}:{declared}"
            if self.db.has_recording_key(key):
                self.counters["recording_duplicates"] += 1
                return web.json_response({"status": "duplicate"}, status=200)
            final = self.recordings_dir / f"{uuid.uuid4().hex}-{_safe_name(fields_['file_name'])}"
            await asyncio.to_thread(upload_path.rename, final)
            tmp_path = final
            self.db.insert_recording(
                key,
                fields_,
                file_size=declared,
                bytes_received=received,
                content_type=ctype,
                stored_path=str(final),
                sha256=digest,
            )
            tmp_path = None  # kept
        except _BadUpload as exc:
            return self._reject("recording", 400, str(exc), idem)
        finally:
            if tmp_path is not None:
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(tmp_path.unlink)
        self.counters["recordings_accepted"] += 1
        self.counters["recording_bytes"] += received
        return web.json_response({"status": "accepted"}, status=202)

    async def _read_recording(
        self, request: web.Request
    ) -> tuple[dict[str, str], Path, int, str, str]:
        reader = await request.multipart()
        values: dict[str, str] = {}
        tmp_path: Path | None = None
        received = 0
        digest = hashlib.sha256()
        ctype = ""
        try:
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):
                    raise _BadUpload("nested multipart is not accepted")
                name = part.name or ""
                if tmp_path is not None:
                    raise _BadUpload(f"field {name!r} after the audio part (audio must be last)")
                if name == "audio":
                    ctype = part.headers.get("Content-Type", "")
                    if not (ctype.startswith("audio/") or ctype == "application/octet-stream"):
                        raise _BadUpload(f"audio part has content type {ctype!r}")
                    tmp_path = self.recordings_dir / f".upload-{uuid.uuid4().hex}"
                    fh: IO[bytes] = await asyncio.to_thread(tmp_path.open, "wb")
                    try:
                        while chunk := await part.read_chunk(AUDIO_CHUNK):
                            received += len(chunk)
                            digest.update(chunk)
                            await asyncio.to_thread(fh.write, chunk)
                    finally:
                        await asyncio.to_thread(fh.close)
                    continue
                data = await part.read_chunk(MAX_FIELD_BYTES + 1)
                if len(data) > MAX_FIELD_BYTES or not part.at_eof():
                    raise _BadUpload(f"field {name!r} too large")
                values[name] = data.decode("utf-8", "replace")
            if tmp_path is None:
                raise _BadUpload("no audio part")
            return values, tmp_path, received, digest.hexdigest(), ctype
        except BaseException:
            if tmp_path is not None:
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(tmp_path.unlink)
            raise

    async def _handle_healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _handle_control(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object")
            if data.get("reset"):
                self.reset_faults()
                rest = {k: v for k, v in data.items() if k != "reset"}
                if rest:
                    self.faults = FaultPlan.from_json(rest)
            else:
                self.faults = FaultPlan.from_json(data)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"faults": asdict(self.faults)})

    async def _handle_get_control(self, request: web.Request) -> web.Response:
        return web.json_response({"faults": asdict(self.faults)})

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _handle_index(self, request: web.Request) -> web.Response:
        """The calls received, as a table (web/receiver.html polls /_calls)."""
        return web.Response(text=page("receiver.html"), content_type="text/html")

    async def _handle_calls(self, request: web.Request) -> web.Response:
        linkedid = request.query.get("linkedid")
        if linkedid is not None:
            return web.json_response({"linkedid": linkedid, "documents": self.docs_for(linkedid)})
        complete = request.query.get("complete") in ("1", "true", "yes")
        latest = self.db.latest_per_linkedid(complete_only=complete)
        return web.json_response({"count": len(latest), "calls": list(latest.values())})

    async def _handle_recordings(self, request: web.Request) -> web.Response:
        return web.json_response({"recordings": self.recordings()})

    async def _handle_rejects(self, request: web.Request) -> web.Response:
        return web.json_response({"rejects": self.db.rejects()})

    # ------------------------------------------------------------ query helpers

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.counters)
        out.update(
            documents=self.db.count_documents(),
            unique_calls=self.db.count_unique_calls(),
            complete_calls=self.db.count_complete_calls(),
            recordings=self.db.count_recordings(),
            connections=len(self.connections),
            faults=asdict(self.faults),
            schema=self.schema_origin,
        )
        return out

    def count_unique_calls(self) -> int:
        return self.db.count_unique_calls()

    def count_complete_calls(self) -> int:
        return self.db.count_complete_calls()

    def count_documents(self) -> int:
        return self.db.count_documents()

    def linkedids(self) -> list[str]:
        return self.db.linkedids()

    def docs_for(self, linkedid: str) -> list[dict[str, Any]]:
        """Every stored document of a linkedid, by revision."""
        return self.db.docs_for(linkedid)

    def latest_complete(self, linkedid: str) -> dict[str, Any] | None:
        """The highest-revision complete document of a linkedid."""
        return self.db.latest_complete(linkedid)

    def latest_complete_all(self) -> dict[str, dict[str, Any]]:
        return self.db.latest_per_linkedid(complete_only=True)

    def receipts(self) -> list[dict[str, Any]]:
        """Per stored document: linkedid, revision, ship_phase, is_complete, received_at (unix)."""
        return self.db.receipts()

    def complete_received_at(self) -> dict[str, float]:
        """linkedid -> unix time the first complete document was stored (latency)."""
        return self.db.first_complete_received_at()

    def recordings(self) -> list[dict[str, Any]]:
        return self.db.recordings()

    def rejects(self) -> list[dict[str, Any]]:
        return self.db.rejects()

    async def wait_for(
        self, predicate: Callable[[Receiver], bool], timeout: float, interval: float = 0.05
    ) -> bool:
        """Poll `predicate(self)` until true or `timeout` seconds pass; returns the last value."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(interval)

    async def wait_for_calls(self, n: int, timeout: float, *, complete: bool = True) -> bool:
        """Wait until `n` distinct linkedids (complete ones by default) are stored."""
        if complete:
            return await self.wait_for(lambda r: r.count_complete_calls() >= n, timeout)
        return await self.wait_for(lambda r: r.count_unique_calls() >= n, timeout)


class _BadUpload(Exception):
    pass


def _safe_name(name: str) -> str:
    base = Path(name.replace("\\", "/")).name
    return re.sub(r"[^A-Za-z0-9._-]", "_", base)[:120] or "audio"


async def _drain(request: web.Request) -> None:
    """Consume an unread request body so the connection stays usable."""
    with contextlib.suppress(Exception):
        while await request.content.readany():
            pass


def _content(doc: dict[str, Any]) -> dict[str, Any]:
    """A document without its send stamp (`shipped_at`, new on every retry)."""
    return {k: v for k, v in doc.items() if k != "shipped_at"}
