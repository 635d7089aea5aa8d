"""Reconcile one AsteriskConnector: resolve its Secrets, apply its children by
server-side apply (the control token Secret <name>-control read back first, so
its token is made once and kept: `control_token`), and write conditions
(Reconciled: the apply's outcome);
refresh its status on a timer; on delete, drain its agent (drain.py decides).

Used by handlers.py (kopf wiring) and by the bench. It does not import kopf:
events are posted through the `post_event` callable the caller passes, and
retries are the caller's (handlers.py raises kopf.TemporaryError; failed
reconciles kopf would not retry are kept by `mark_pending` / `retry_due`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import json
import logging
import os
import secrets as random_tokens
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from kubernetes.client.exceptions import ApiException

from sipstack_operator import drain as dr
from sipstack_operator import revocation as rv
from sipstack_operator import status as st
from sipstack_operator.allowlist import AllowList
from sipstack_operator.api import KubeApi
from sipstack_operator.metrics import OperatorMetrics
from sipstack_operator.render import (
    CONNECTOR_LABEL,
    CONTROL_TOKEN_KEY,
    DEFAULT_AGENT_IMAGE,
    Names,
    Owner,
    SecretData,
    render,
)
from sipstack_operator.spec import ConnectorSpec, SecretKeyRef, SpecError, parse_resource

logger = logging.getLogger("sipstack_operator")

# post_event(cr_body, event_type ("Normal"|"Warning"), reason, message)
PostEvent = Callable[[Mapping[str, Any], str, str, str], None]


@dataclass(frozen=True)
class OperatorConfig:
    default_image: str = DEFAULT_AGENT_IMAGE
    status_interval: float = 30.0  # seconds between two status refreshes per connector
    agent_status_url: str = "http://{service}.{namespace}.svc:8000/status"
    agent_status_timeout: float = 3.0
    # The agent's control endpoint (relay.py); {action}: resend, dead-letters/retry, ...
    agent_control_url: str = "http://{service}.{namespace}.svc:8000/control/{action}"
    agent_control_timeout: float = 10.0
    retry_base: float = 10.0  # first retry after a missing Secret / failed apply
    retry_cap: float = 300.0
    metrics_port: int = 9090  # /metrics (sipstack_operator/metrics.py); 0 = off
    # What a connector may ask for (allowlist.py): API hosts, images, volumes, Secrets.
    allow: AllowList = field(
        default_factory=lambda: AllowList.from_env({}, default_image=DEFAULT_AGENT_IMAGE)
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env
        d = cls()
        default_image = env.get("SIPSTACK_AGENT_IMAGE") or d.default_image
        return cls(
            default_image=default_image,
            status_interval=float(env.get("SIPSTACK_STATUS_INTERVAL") or d.status_interval),
            agent_status_url=env.get("SIPSTACK_AGENT_STATUS_URL") or d.agent_status_url,
            agent_status_timeout=float(
                env.get("SIPSTACK_AGENT_STATUS_TIMEOUT") or d.agent_status_timeout
            ),
            agent_control_url=env.get("SIPSTACK_AGENT_CONTROL_URL") or d.agent_control_url,
            agent_control_timeout=float(
                env.get("SIPSTACK_AGENT_CONTROL_TIMEOUT") or d.agent_control_timeout
            ),
            retry_base=float(env.get("SIPSTACK_RETRY_BASE") or d.retry_base),
            retry_cap=float(env.get("SIPSTACK_RETRY_CAP") or d.retry_cap),
            metrics_port=_port(env, "SIPSTACK_METRICS_PORT", d.metrics_port),
            allow=AllowList.from_env(env, default_image=default_image),
        )

    @property
    def drain_poll(self) -> float:
        """Seconds between two looks at a draining agent."""
        return min(self.status_interval, 10.0)

    def retry_delay(self, retry: int) -> float:
        return float(min(self.retry_cap, self.retry_base * (2 ** min(retry, 16))))


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) > 65535:
        raise ValueError(f"{name} must be a port number from 0 (off) to 65535, got {raw!r}")
    return int(raw)


CONTROL_TOKEN_MIN = 16  # the agent's minimum (CONTROL_TOKEN)
NOT_ALLOWED = "NotAllowed"  # condition reason: the install's allow-list refused the CR
NOT_OWNED = "NotOwned"  # condition reason: a child's name is taken by an object not ours


class ReconcileError(Exception):
    """The reconcile could not finish; the message is safe to show (no secret values)."""


class SecretsUnresolvedError(ReconcileError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class ApplyError(ReconcileError):
    pass


class NotAllowedError(ReconcileError):
    """The connector breaks the install's allow-list (or would adopt a foreign object):
    nothing was applied; retrying does not help until the CR or the install changes."""

    def __init__(self, reason: str, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.reason = reason
        self.problems = problems


def _decode_secret(obj: Mapping[str, Any]) -> dict[str, str]:
    """A Secret's data as text (stringData too, for servers that keep it verbatim)."""
    out: dict[str, str] = {}
    for key, value in (obj.get("data") or {}).items():
        try:
            out[str(key)] = base64.b64decode(str(value), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            out[str(key)] = ""  # binary or garbage: present but unusable as text
    for key, value in (obj.get("stringData") or {}).items():
        out[str(key)] = str(value)
    return out


def failure_reason(error: Exception) -> str:
    """The `reason` label of a failed reconcile (sipstack_operator.metrics.FAILURE_REASONS)."""
    if isinstance(error, SpecError):
        return "invalid_spec"
    if isinstance(error, NotAllowedError):
        return "not_allowed"
    if isinstance(error, SecretsUnresolvedError):
        return "secrets_unresolved"
    if isinstance(error, ApplyError):
        return "apply_failed"
    if isinstance(error, ApiException):
        return "api_error"
    return "error"


def _measured(
    reconcile: Callable[[Reconciler, Mapping[str, Any]], Awaitable[list[dict[str, Any]]]],
) -> Callable[[Reconciler, Mapping[str, Any]], Awaitable[list[dict[str, Any]]]]:
    """Count and time every reconcile in the reconciler's metrics."""

    @functools.wraps(reconcile)
    async def measured(self: Reconciler, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        started = time.perf_counter()
        try:
            live = await reconcile(self, body)
        except Exception as e:
            self.metrics.reconciled(time.perf_counter() - started, failure_reason(e))
            raise
        self.metrics.reconciled(time.perf_counter() - started)
        return live

    return measured


def _api_message(e: ApiException) -> str:
    """The Status message of an API error (never the request body)."""
    try:
        message = json.loads(e.body or "{}").get("message") or ""
    except (ValueError, AttributeError):
        message = ""
    return st.scrub(f"HTTP {e.status} {e.reason or ''}: {message}".strip())


class Reconciler:
    def __init__(
        self,
        api: KubeApi,
        config: OperatorConfig,
        post_event: PostEvent | None = None,
        session: aiohttp.ClientSession | None = None,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self.api = api
        self.config = config
        self.post_event = post_event
        self.session = session
        self.metrics = metrics or OperatorMetrics()
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        # (namespace, name) -> (failed attempts, monotonic time of the next try)
        self._pending: dict[tuple[str, str], tuple[int, float]] = {}
        # Last status written per (namespace, name, uid): fresher than the
        # body a timer or a secret event hands over.
        self._written: dict[tuple[str, str, str], dict[str, Any]] = {}
        # (namespace, name) -> digest of the referenced Secrets' values at the
        # last reconcile (never the values): the timer's rotation check.
        self._secrets_seen: dict[tuple[str, str], str] = {}

    # ------------------------------------------------------------------ helpers

    def _lock(self, namespace: str, name: str) -> asyncio.Lock:
        return self._locks.setdefault((namespace, name), asyncio.Lock())

    def forget(self, namespace: str, name: str) -> None:
        self._locks.pop((namespace, name), None)
        self.metrics.connectors.forget(namespace, name)
        self._pending.pop((namespace, name), None)
        self._secrets_seen.pop((namespace, name), None)
        for key in [k for k in self._written if k[:2] == (namespace, name)]:
            del self._written[key]

    @staticmethod
    def _ids(body: Mapping[str, Any]) -> tuple[str, str, str, int | None]:
        meta = body.get("metadata") or {}
        generation = meta.get("generation")
        return (
            str(meta.get("namespace") or "default"),
            str(meta["name"]),
            str(meta.get("uid") or ""),
            int(generation) if generation is not None else None,
        )

    def _old_status(self, body: Mapping[str, Any]) -> dict[str, Any]:
        ns, name, uid, _ = self._ids(body)
        cached = self._written.get((ns, name, uid))
        return dict(cached) if cached is not None else dict(body.get("status") or {})

    def current_status(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The connector's status as last written by this process, else as in `body`."""
        return self._old_status(body)

    async def write_fields(self, body: Mapping[str, Any], fields: Mapping[str, Any]) -> None:
        """Write top-level status fields (no condition changes), e.g. lastRequest."""
        ns, name, _uid, _ = self._ids(body)
        async with self._lock(ns, name):
            await self._write(body, [], fields)

    async def _write(
        self,
        body: Mapping[str, Any],
        conditions: list[st.Condition],
        extra: Mapping[str, Any] | None = None,
        *,
        generation: int | None = None,
    ) -> None:
        ns, name, uid, _ = self._ids(body)
        old = self._old_status(body)
        merged, transitions = st.merge_conditions(
            old.get("conditions"), conditions, now=st.now_rfc3339(), generation=generation
        )
        new = {**old, **(extra or {}), "conditions": merged}
        paused = (body.get("spec") or {}).get("paused") is True
        self.metrics.connectors.observe(ns, name, paused=paused, conditions=merged)
        patch = st.status_patch(old, new)
        if patch is not None:
            await self.api.patch_connector_status(ns, name, patch)
            self._written[(ns, name, uid)] = new
        for t in transitions:
            logger.info("%s/%s: %s=%s (%s) %s", ns, name, t.type, t.status, t.reason, t.message)
            if self.post_event is not None:
                self.post_event(body, t.event_type, t.reason, f"{t.type}={t.status}: {t.message}")

    # ------------------------------------------------------------------ secrets

    async def resolve_secrets(
        self, spec: ConnectorSpec
    ) -> tuple[dict[tuple[str, str], str], list[str], list[str]]:
        """Values of every referenced key, the problems (naming Secret and key only),
        and the Secrets the allow-list refuses (read by name, never used)."""
        values: dict[tuple[str, str], str] = {}
        problems: list[str] = []
        refused_secrets: list[str] = []
        refs = spec.secret_refs()
        fetched: dict[str, dict[str, str] | None] = {}
        reported: set[str] = set()
        for secret_name in spec.secret_names():
            obj = await self.api.get_secret(spec.namespace, secret_name)
            refused = self.config.allow.check_secret(obj) if obj is not None else None
            if refused is not None:
                refused_secrets.append(refused)
                reported.add(secret_name)
                obj = None
            fetched[secret_name] = _decode_secret(obj) if obj is not None else None
        for ref in refs:
            data = fetched[ref.name]
            if data is None:
                if ref.name not in reported:
                    problems.append(
                        f"Secret {ref.name!r} not found in namespace {spec.namespace!r}"
                    )
                    reported.add(ref.name)
            elif ref.key not in data:
                problems.append(f"key {ref.key!r} not found in Secret {ref.name!r}")
            elif not data[ref.key]:
                problems.append(f"key {ref.key!r} of Secret {ref.name!r} is empty or not text")
            else:
                values[(ref.name, ref.key)] = data[ref.key]
        return values, problems, refused_secrets

    # ------------------------------------------------------------------ reconcile

    @_measured
    async def reconcile(self, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Apply the children of one connector; returns the live children.

        Raises SpecError (permanent), SecretsUnresolvedError or ApplyError
        (temporary) after writing the matching conditions.
        """
        ns, name, uid, generation = self._ids(body)
        async with self._lock(ns, name):
            try:
                spec = parse_resource(body, default_image=self.config.default_image)
            except SpecError as e:
                await self._write(
                    body,
                    [
                        st.Condition(st.READY, st.FALSE, "InvalidSpec", str(e)),
                        st.Condition(st.RECONCILED, st.FALSE, "InvalidSpec", str(e)),
                    ],
                    generation=generation,
                )
                raise

            refused = self.config.allow.check_spec(spec)
            if refused:
                await self._refuse(body, NotAllowedError(NOT_ALLOWED, refused), generation)

            secrets, problems, refused = await self.resolve_secrets(spec)
            self._secrets_seen[(ns, name)] = _secrets_digest(secrets, problems + refused)
            if refused or problems:
                missing = [(r.name, r.key) for r in spec.secret_refs()]
                missing = [k for k in missing if k not in secrets]
                await self._stop_if_revoked(body, spec, uid, missing, refused, problems)
            if refused:
                await self._refuse(body, NotAllowedError(NOT_ALLOWED, refused), generation)
            if problems:
                reason = (
                    "SecretNotFound"
                    if any(p.startswith("Secret ") for p in problems)
                    else "SecretKeyNotFound"
                )
                message = "; ".join(problems)
                await self._write(
                    body,
                    [
                        st.Condition(st.SECRETS_RESOLVED, st.FALSE, reason, message),
                        st.Condition(st.RECONCILED, st.FALSE, reason, message),
                        st.Condition(st.READY, st.FALSE, reason, message),
                    ],
                    generation=generation,
                )
                raise SecretsUnresolvedError(problems)

            sm_available = (
                await self.api.service_monitors_available()
                if spec.service_monitor.enabled
                else False
            )
            live: list[dict[str, Any]] = []
            try:
                token = await self.control_token(spec, uid)
                children = self.render(
                    spec, secrets, uid=uid, sm_available=sm_available, control_token=token
                )
                foreign = await self._foreign_children(spec, children, uid)
                if foreign:
                    await self._refuse(body, NotAllowedError(NOT_OWNED, foreign), generation)
                for child in children:
                    live.append(await self.api.apply(child))
                if not spec.service_monitor.enabled:
                    await self._prune_service_monitor(spec, uid)
            except ApiException as e:
                message = f"applying children failed: {_api_message(e)}"
                await self._write(
                    body,
                    [
                        st.Condition(st.SECRETS_RESOLVED, st.TRUE, "SecretsFound", _found(spec)),
                        st.Condition(st.RECONCILED, st.FALSE, "ApplyFailed", message),
                        st.Condition(st.READY, st.FALSE, "ApplyFailed", message),
                    ],
                    generation=generation,
                )
                raise ApplyError(message) from None

            deployment = next((c for c in live if c.get("kind") == "Deployment"), None)
            if deployment is None:  # a server that answers apply without a body
                deployment = await self.api.get_deployment(ns, Names.of(name).deployment)
            applied = st.reconciled_condition(
                generation, [f"{c['kind']} {c['metadata']['name']}" for c in children]
            )
            await self._write_status(
                body, spec, deployment, sm_available, applied, generation=generation
            )
            self._pending.pop((ns, name), None)
            return live

    async def _refuse(
        self, body: Mapping[str, Any], error: NotAllowedError, generation: int | None
    ) -> None:
        """Write Ready/Reconciled False with the rules broken, then raise `error`."""
        message = str(error)
        await self._write(
            body,
            [
                st.Condition(st.RECONCILED, st.FALSE, error.reason, message),
                st.Condition(st.READY, st.FALSE, error.reason, message),
            ],
            generation=generation,
        )
        raise error

    async def _stop_if_revoked(
        self,
        body: Mapping[str, Any],
        spec: ConnectorSpec,
        uid: str,
        missing: list[tuple[str, str]],
        refused: list[str],
        problems: list[str],
    ) -> None:
        """A Secret key the running agent mounts is gone: scale it to 0, say
        SecretRevoked, raise (revocation.py). Returns when nothing it uses is gone."""
        name = Names.of(spec.name).deployment
        deployment = await self.api.get_deployment(spec.namespace, name)
        if not rv.revoked_keys(deployment, uid, missing):
            return
        everything = refused + problems
        if deployment is not None and rv.needs_scale_down(deployment):
            try:
                await self.api.scale_deployment(
                    spec.namespace, name, 0, field_manager=rv.FIELD_MANAGER
                )
            except ApiException as e:
                raise ApplyError(f"stopping the agent failed: {_api_message(e)}") from None
            logger.warning("%s/%s: %s", spec.namespace, spec.name, rv.message(spec, everything))
        generation = self._ids(body)[3]
        await self._write(body, rv.conditions(spec, everything), generation=generation)
        if refused:  # kopf does not retry it; the status timer sees the label come back
            raise NotAllowedError(NOT_ALLOWED, refused)
        raise SecretsUnresolvedError(problems)

    def render(
        self,
        spec: ConnectorSpec,
        secrets: SecretData,
        *,
        uid: str,
        sm_available: bool,
        control_token: str,
    ) -> list[dict[str, Any]]:
        return render(
            spec,
            secrets,
            owner=Owner(name=spec.name, uid=uid) if uid else None,
            service_monitor_available=sm_available,
            default_image=self.config.default_image,
            control_token=control_token,
        )

    async def control_token(self, spec: ConnectorSpec, uid: str) -> str:
        """The connector's control token: the one in its <name>-control Secret, else a
        new random one (32 bytes), applied with the other children. Created once and
        kept; a Secret of that name this connector does not own is refused with the
        other foreign children (its token is never read into a new Secret)."""
        existing = await self.api.get_secret(spec.namespace, Names.of(spec.name).control_secret)
        if existing is not None and _owned_by(existing, spec.name, uid):
            token = _decode_secret(existing).get(CONTROL_TOKEN_KEY, "")
            if len(token) >= CONTROL_TOKEN_MIN and token.isprintable() and " " not in token:
                return token
        return random_tokens.token_urlsafe(32)

    async def _foreign_children(
        self, spec: ConnectorSpec, children: list[dict[str, Any]], uid: str
    ) -> list[str]:
        """Children whose name is taken by an object this connector does not own.

        Server-side apply with force would take such an object over (and garbage
        collection would later delete it with the connector): it is refused instead.
        """
        problems: list[str] = []
        for child in children:
            existing = await self.api.get_child(child)
            if existing is None or _owned_by(existing, spec.name, uid):
                continue
            problems.append(
                f"{child['kind']} {child['metadata']['name']} already exists and is not owned "
                "by this connector: not adopted (delete or rename it)"
            )
        return problems

    async def _prune_service_monitor(self, spec: ConnectorSpec, uid: str) -> None:
        """Delete our ServiceMonitor after monitoring was disabled (never someone else's)."""
        if not await self.api.service_monitors_available():
            return
        sm_name = Names.of(spec.name).service_monitor
        existing = await self.api.get_service_monitor(spec.namespace, sm_name)
        if existing is None:
            return
        owners = (existing.get("metadata") or {}).get("ownerReferences") or []
        if uid and any(o.get("uid") == uid for o in owners):
            await self.api.delete_service_monitor(spec.namespace, sm_name)

    async def _write_status(
        self,
        body: Mapping[str, Any],
        spec: ConnectorSpec,
        deployment: Mapping[str, Any] | None,
        sm_available: bool,
        applied: st.Condition,
        *,
        generation: int | None,
    ) -> None:
        secrets_cond = st.Condition(st.SECRETS_RESOLVED, st.TRUE, "SecretsFound", _found(spec))
        agent = st.agent_condition(deployment, paused=spec.paused)
        monitoring = st.monitoring_condition(
            enabled=spec.service_monitor.enabled, available=sm_available
        )
        conds = {c.type: c for c in (applied, secrets_cond, agent, monitoring)}
        ready = st.ready_condition(conds, paused=spec.paused)
        extra: dict[str, Any] = {"agent": _agent_block(spec, deployment, self.config)}
        if generation is not None:
            extra["observedGeneration"] = generation
        await self._write(
            body, [ready, applied, secrets_cond, agent, monitoring], extra, generation=generation
        )

    async def secrets_changed(self, body: Mapping[str, Any]) -> bool:
        """Whether the referenced Secrets (read by name) changed since the last reconcile.

        The operator never lists or watches Secrets: the status timer calls this.
        """
        ns, name, _uid, _ = self._ids(body)
        seen = self._secrets_seen.get((ns, name))
        if seen is None:
            return False  # not reconciled by this process yet: kopf's handlers will
        try:
            spec = parse_resource(body, default_image=self.config.default_image)
        except SpecError:
            return False
        secrets, problems, refused = await self.resolve_secrets(spec)
        return _secrets_digest(secrets, problems + refused) != seen

    # ------------------------------------------------------------------ retries

    def mark_pending(self, namespace: str, name: str) -> float:
        """A reconcile kopf does not retry (a Secret event's) failed: retry it later.

        Returns the delay; each failure doubles it (retry_base .. retry_cap).
        """
        attempt = self._pending.get((namespace, name), (0, 0.0))[0]
        delay = self.config.retry_delay(attempt)
        self._pending[(namespace, name)] = (attempt + 1, time.monotonic() + delay)
        return delay

    def retry_due(self, namespace: str, name: str) -> bool:
        pending = self._pending.get((namespace, name))
        return pending is not None and pending[1] <= time.monotonic()

    # ------------------------------------------------------------------ timer

    async def agent_status(
        self, namespace: str, name: str, deployment: Mapping[str, Any] | None
    ) -> dict[str, Any] | None:
        """The agent's /status document while its pod is ready (None when unreadable)."""
        ready_replicas = int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0)
        if not ready_replicas or self.session is None:
            return None
        url = self.config.agent_status_url.format(
            service=Names.of(name).service, namespace=namespace, name=name
        )
        return await st.fetch_agent_status(
            self.session, url, timeout=self.config.agent_status_timeout
        )

    async def refresh(self, body: Mapping[str, Any]) -> None:
        """Status from the Deployment and the agent's /status (no apply)."""
        ns, name, _uid, _ = self._ids(body)
        try:
            spec = parse_resource(body, default_image=self.config.default_image)
        except SpecError:
            return  # reported by reconcile
        async with self._lock(ns, name):
            old = self._old_status(body)
            known = st.conditions_from_status(old)
            deployment = await self.api.get_deployment(ns, Names.of(name).deployment)
            doc = await self.agent_status(ns, name, deployment)
            agent = rv.kept_agent_condition(known) or st.agent_condition(
                deployment, paused=spec.paused, agent_doc=doc
            )
            conds = {**known, agent.type: agent}
            ready = st.ready_condition(conds, paused=spec.paused)
            extra: dict[str, Any] = {"agent": _agent_block(spec, deployment, self.config)}
            extra.update(st.agent_fields(doc))
            await self._write(body, [ready, agent], extra)

    # ------------------------------------------------------------------ delete

    async def drain(self, body: Mapping[str, Any], *, started: datetime) -> dr.DrainStep:
        """One look at a connector being deleted: its agent's backlog against the deadline.

        Writes status.drain and Ready=False (reason Draining, then Drained,
        DrainTimedOut or DrainSkipped: each new reason is an event), and posts
        an event whenever the backlog changed while draining.
        """
        ns, name, _uid, _ = self._ids(body)
        if started.tzinfo is None:
            started = started.replace(tzinfo=UTC)
        elapsed = (datetime.now(tz=UTC) - started).total_seconds()
        try:
            spec = parse_resource(body, default_image=self.config.default_image)
        except SpecError as e:
            return dr.DrainStep(dr.SKIPPED, f"invalid spec, not draining: {e}", None)
        async with self._lock(ns, name):
            deployment = await self.api.get_deployment(ns, Names.of(name).deployment)
            running = st.agent_condition(deployment, paused=spec.paused).status == st.TRUE
            doc = await self.agent_status(ns, name, deployment) if running else None
            fields = st.agent_fields(doc)
            step = dr.decide(
                timeout_seconds=spec.drain.timeout_seconds,
                elapsed_seconds=elapsed,
                agent_running=running,
                backlog=fields.get("backlog"),
                claim=Names.of(name).pvc,
                retained=spec.state.retained,
            )
            previous = self._old_status(body).get("drain") or {}
            reason = st.READY_DRAINING if not step.done else step.event_reason
            extra = {**fields, "drain": _drain_block(step, started, spec.drain.timeout_seconds)}
            await self._write(body, [st.Condition(st.READY, st.FALSE, reason, step.message)], extra)
            # A new phase is a new Ready reason, posted by _write; progress within it here.
            progressed = previous.get("phase") == step.phase == dr.DRAINING and (
                previous.get("backlog") != step.backlog
            )
            if progressed and self.post_event is not None:
                self.post_event(body, step.event_type, step.event_reason, step.message)
            logger.info("%s/%s: drain %s: %s", ns, name, step.phase, step.message)
            return step


def _owned_by(obj: Mapping[str, Any], name: str, uid: str) -> bool:
    """Ours: an ownerReference to this connector's uid, or (a retained state PVC,
    which has no owner) the connector label render.py sets on it."""
    meta = obj.get("metadata") or {}
    if uid and any(o.get("uid") == uid for o in meta.get("ownerReferences") or []):
        return True
    retained_pvc = obj.get("kind") == "PersistentVolumeClaim" and not meta.get("ownerReferences")
    return retained_pvc and (meta.get("labels") or {}).get(CONNECTOR_LABEL) == name


def _secrets_digest(values: Mapping[tuple[str, str], str], problems: list[str]) -> str:
    text = json.dumps([sorted([*k, v] for k, v in values.items()), problems])
    return hashlib.sha256(text.encode()).hexdigest()


def _drain_block(step: dr.DrainStep, started: datetime, timeout_seconds: int) -> dict[str, Any]:
    block: dict[str, Any] = {
        "phase": step.phase,
        "startedAt": st.now_rfc3339(started),
        "deadline": st.now_rfc3339(started + timedelta(seconds=timeout_seconds)),
        "message": step.message,
    }
    if step.backlog is not None:
        block["backlog"] = step.backlog
    return block


def _found(spec: ConnectorSpec) -> str:
    refs: list[SecretKeyRef] = spec.secret_refs()
    return f"{len(refs)} key(s) found in Secret(s) {', '.join(spec.secret_names())}"


def _agent_block(
    spec: ConnectorSpec, deployment: Mapping[str, Any] | None, config: OperatorConfig
) -> dict[str, Any]:
    image = spec.image or config.default_image
    with contextlib.suppress(KeyError, IndexError, TypeError):
        image = (deployment or {})["spec"]["template"]["spec"]["containers"][0]["image"]
    ready = int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0)
    return {"image": image, "readyReplicas": ready}
