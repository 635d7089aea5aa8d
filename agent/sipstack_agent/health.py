"""The agent's monitoring endpoints on MONITORING_PORT (aiohttp).

- `/metrics`: Prometheus text from the agent's own `Metrics.registry`.
- `/healthz`: the process is alive and its loop answers (always 200).
- `/readyz`: 200 only when the `ready_provider` says so; 503 with JSON
  reasons otherwise (database unreachable, shipper stuck, key rejected...).
- `/status`: JSON from the `status_provider` plus the version; the agent's
  provider (`Agent.status`) follows schemas/agent_status.v1.schema.json.
- `/`: the status page for people (web/status.html), refreshed from /status.
- `POST /control/<action>` (and `GET` for the ones that report progress): the
  actions the app passes in (admin/control.py: resend, dead-letters/retry), each
  behind `Authorization: Bearer <CONTROL_TOKEN>` (constant-time compare); no
  token configured: 403 for every control request, a wrong or missing one: 401.

The app passes the providers in, so this module imports no stage (sources,
state, shipping): it only knows metrics and aiohttp.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sipstack_agent import __version__
from sipstack_agent.metrics import Metrics
from sipstack_agent.web import page

log = logging.getLogger("sipstack_agent.health")

StatusProvider = Callable[[], Awaitable[dict[str, Any]]]
ReadyProvider = Callable[[], Awaitable[tuple[bool, list[str]]]]
Check = Callable[[], Awaitable[list[str]]]
ControlAction = Callable[[dict[str, object]], Awaitable[tuple[int, dict[str, object]]]]
"""A control action: the request's JSON object -> (HTTP status, JSON answer)."""


async def _always_ready() -> tuple[bool, list[str]]:
    return True, []


async def _empty_status() -> dict[str, Any]:
    return {}


def combine_checks(*checks: Check, timeout: float = 5.0) -> ReadyProvider:
    """A ready provider from checks that each return their problems (empty = fine).

    A check that raises or takes longer than `timeout` counts as a problem.
    """

    async def run_one(check: Check) -> list[str]:
        name = getattr(check, "__name__", "check")
        try:
            return list(await asyncio.wait_for(check(), timeout))
        except TimeoutError:
            return [f"{name}: no answer within {timeout:g}s"]
        except Exception as exc:
            return [f"{name}: {type(exc).__name__}: {exc}"]

    async def ready() -> tuple[bool, list[str]]:
        results = await asyncio.gather(*(run_one(c) for c in checks))
        problems = [p for r in results for p in r]
        return not problems, problems

    return ready


def _json_default(o: Any) -> Any:
    if isinstance(o, (datetime, date)):
        return o.isoformat()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    return str(o)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=_json_default, indent=None, sort_keys=False)


class HealthServer:
    """`url = await HealthServer(metrics, status, ready).start(host, port)`; `await stop()`."""

    def __init__(
        self,
        metrics: Metrics,
        status_provider: StatusProvider | None = None,
        ready_provider: ReadyProvider | None = None,
        *,
        version: str = __version__,
        provider_timeout: float = 5.0,
        control: Mapping[str, ControlAction] | None = None,
        control_token: str = "",
    ) -> None:
        self.metrics = metrics
        self.status_provider: StatusProvider = status_provider or _empty_status
        self.ready_provider: ReadyProvider = ready_provider or _always_ready
        self.version = version
        self.provider_timeout = provider_timeout
        self.url: str | None = None
        self._runner: web.AppRunner | None = None
        self.app = web.Application()
        self.app.router.add_get("/metrics", self.handle_metrics)
        self.app.router.add_get("/healthz", self.handle_healthz)
        self.app.router.add_get("/readyz", self.handle_readyz)
        self.app.router.add_get("/status", self.handle_status)
        self.app.router.add_get("/", self.handle_index)
        self.control: dict[str, ControlAction] = dict(control or {})
        self._control_token = control_token.encode()
        self.app.router.add_route("*", "/control/{action:.+}", self.handle_control)

    async def start(self, host: str = "0.0.0.0", port: int = 8000) -> str:  # noqa: S104
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        bound = sockets[0].getsockname()[1] if sockets else port
        shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104
        self.url = f"http://{shown}:{bound}"
        log.info("monitoring on %s:%d (/metrics /healthz /readyz /status)", host, bound)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> HealthServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------ handlers

    async def handle_metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def handle_healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": self.version})

    async def handle_readyz(self, request: web.Request) -> web.Response:
        try:
            ready, reasons = await asyncio.wait_for(self.ready_provider(), self.provider_timeout)
        except TimeoutError:
            ready, reasons = False, [f"readiness check took longer than {self.provider_timeout:g}s"]
        except Exception as exc:
            log.warning("readiness check failed: %s", exc)
            ready, reasons = False, [f"readiness check failed: {type(exc).__name__}: {exc}"]
        body = {"ready": bool(ready), "reasons": list(reasons)}
        return web.json_response(body, status=200 if ready else 503, dumps=_dumps)

    async def handle_status(self, request: web.Request) -> web.Response:
        try:
            status = await asyncio.wait_for(self.status_provider(), self.provider_timeout)
        except Exception as exc:
            log.warning("status provider failed: %s", exc)
            return web.json_response(
                {"error": f"{type(exc).__name__}: {exc}", "version": self.version}, status=500
            )
        body = {"version": self.version, **dict(status)}
        return web.json_response(body, dumps=_dumps)

    async def handle_index(self, request: web.Request) -> web.Response:
        """The status page: plain HTML whose script polls /status (web/status.html)."""
        return web.Response(text=page("status.html"), content_type="text/html")

    def _authorized(self, request: web.Request) -> web.Response | None:
        """None when the request carries the control token; else the refusal."""
        if not self._control_token:
            return web.json_response(
                {"error": "control endpoint disabled: set CONTROL_TOKEN or CONTROL_TOKEN_FILE"},
                status=403,
            )
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self._control_token
        ):
            return web.json_response(
                {"error": "missing or wrong control token"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return None

    async def handle_control(self, request: web.Request) -> web.Response:
        refused = self._authorized(request)
        if refused is not None:
            return refused
        name = request.match_info["action"]
        key = f"{request.method} {name}"
        action = self.control.get(key)
        if action is None:
            known = sorted(self.control)
            status = 405 if any(k.endswith(f" {name}") for k in known) else 404
            return web.json_response(
                {"error": f"no control action {key}", "known": known}, status=status
            )
        body: dict[str, object] = {}
        if request.can_read_body:
            try:
                got = await request.json()
            except ValueError:
                return web.json_response({"error": "the body is not JSON"}, status=400)
            if not isinstance(got, dict):
                return web.json_response({"error": "the body must be a JSON object"}, status=400)
            body = got
        body.update({k: v for k, v in request.query.items() if k not in body})
        try:
            status, answer = await action(body)
        except Exception as exc:
            log.exception("control action %s failed", key)
            return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=500)
        return web.json_response(answer, status=status, dumps=_dumps)


__all__: Sequence[str] = [
    "Check",
    "ControlAction",
    "HealthServer",
    "ReadyProvider",
    "StatusProvider",
    "combine_checks",
]
