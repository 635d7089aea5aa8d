"""Reconcile one AsteriskConnector, in order: parse the spec, check it against
the install's allow-list, resolve its Secrets (secretrefs.py), apply its
children with the ownership check (children.py) and write conditions
(statuswrite.py; Reconciled: the apply's outcome); refresh its status on a
timer; on delete, drain its agent (drain.py decides).

Used by handlers.py (kopf wiring) and by the bench. It does not import kopf:
events are posted through the `post_event` callable the caller passes, and
retries are the caller's (handlers.py raises kopf.TemporaryError; failed
reconciles kopf would not retry are kept by `mark_pending` / `retry_due`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from kubernetes.client.exceptions import ApiException

from sipstack_operator import children as ch
from sipstack_operator import drain as dr
from sipstack_operator import revocation as rv
from sipstack_operator import secretrefs
from sipstack_operator import status as st
from sipstack_operator.api import KubeApi
from sipstack_operator.config import OperatorConfig
from sipstack_operator.errors import (
    NOT_ALLOWED,
    NOT_OWNED,
    ApplyError,
    NotAllowedError,
    SecretsUnresolvedError,
    api_message,
    failure_reason,
)
from sipstack_operator.metrics import OperatorMetrics
from sipstack_operator.render import Names, Owner, SecretData, render
from sipstack_operator.spec import ConnectorSpec, SpecError, parse_resource
from sipstack_operator.statuswrite import PostEvent, StatusWriter, agent_block, found_message, ids

logger = logging.getLogger("sipstack_operator")


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
        self.status = StatusWriter(api, self.metrics, post_event)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        # (namespace, name) -> (failed attempts, monotonic time of the next try)
        self._pending: dict[tuple[str, str], tuple[int, float]] = {}
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
        self.status.forget(namespace, name)

    def current_status(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The connector's status as last written by this process, else as in `body`."""
        return self.status.current(body)

    async def write_fields(self, body: Mapping[str, Any], fields: Mapping[str, Any]) -> None:
        """Write top-level status fields (no condition changes), e.g. lastRequest."""
        ns, name, _uid, _ = ids(body)
        async with self._lock(ns, name):
            await self.status.write(body, [], fields)

    # ------------------------------------------------------------------ reconcile

    @_measured
    async def reconcile(self, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Apply the children of one connector; returns the live children.

        Raises SpecError (permanent), SecretsUnresolvedError or ApplyError
        (temporary) after writing the matching conditions.
        """
        ns, name, uid, generation = ids(body)
        async with self._lock(ns, name):
            try:
                spec = parse_resource(body, default_image=self.config.default_image)
            except SpecError as e:
                await self.status.write(
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

            secrets = await self._secrets(body, spec, uid, generation)
            sm_available = (
                await self.api.service_monitors_available()
                if spec.service_monitor.enabled
                else False
            )
            children, live = await self._apply(body, spec, secrets, uid, sm_available, generation)

            deployment = next((c for c in live if c.get("kind") == "Deployment"), None)
            if deployment is None:  # a server that answers apply without a body
                deployment = await self.api.get_deployment(ns, Names.of(name).deployment)
            applied = st.reconciled_condition(
                generation, [f"{c['kind']} {c['metadata']['name']}" for c in children]
            )
            await self.status.write_applied(
                body,
                spec,
                deployment,
                sm_available=sm_available,
                applied=applied,
                default_image=self.config.default_image,
                generation=generation,
            )
            self._pending.pop((ns, name), None)
            return live

    async def _secrets(
        self, body: Mapping[str, Any], spec: ConnectorSpec, uid: str, generation: int | None
    ) -> SecretData:
        """The referenced values; else the conditions that say what is missing or
        refused are written (the agent stopped if it used them) and an error raised."""
        ns, name, _uid, _ = ids(body)
        resolved = await secretrefs.resolve(self.api, self.config.allow, spec)
        secrets, problems, refused = resolved.values, resolved.problems, resolved.refused
        self._secrets_seen[(ns, name)] = resolved.digest
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
            await self.status.write(
                body,
                [
                    st.Condition(st.SECRETS_RESOLVED, st.FALSE, reason, message),
                    st.Condition(st.RECONCILED, st.FALSE, reason, message),
                    st.Condition(st.READY, st.FALSE, reason, message),
                ],
                generation=generation,
            )
            raise SecretsUnresolvedError(problems)
        return secrets

    async def _apply(
        self,
        body: Mapping[str, Any],
        spec: ConnectorSpec,
        secrets: SecretData,
        uid: str,
        sm_available: bool,
        generation: int | None,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Render and apply the children (none if a name is taken by an object not
        ours): (rendered, live). A failed apply is written as ApplyFailed and raised."""
        try:
            token = await secretrefs.control_token(self.api, spec, uid)
            children = self.render(
                spec, secrets, uid=uid, sm_available=sm_available, control_token=token
            )
            foreign = await ch.foreign(self.api, spec, children, uid)
            if foreign:
                await self._refuse(body, NotAllowedError(NOT_OWNED, foreign), generation)
            live = await ch.apply_all(self.api, children)
            if not spec.service_monitor.enabled:
                await ch.prune_service_monitor(self.api, spec, uid)
        except ApiException as e:
            message = f"applying children failed: {api_message(e)}"
            found = found_message(spec)
            await self.status.write(
                body,
                [
                    st.Condition(st.SECRETS_RESOLVED, st.TRUE, "SecretsFound", found),
                    st.Condition(st.RECONCILED, st.FALSE, "ApplyFailed", message),
                    st.Condition(st.READY, st.FALSE, "ApplyFailed", message),
                ],
                generation=generation,
            )
            raise ApplyError(message) from None
        return children, live

    async def _refuse(
        self, body: Mapping[str, Any], error: NotAllowedError, generation: int | None
    ) -> None:
        """Write Ready/Reconciled False with the rules broken, then raise `error`."""
        message = str(error)
        await self.status.write(
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
                raise ApplyError(f"stopping the agent failed: {api_message(e)}") from None
            logger.warning("%s/%s: %s", spec.namespace, spec.name, rv.message(spec, everything))
        generation = ids(body)[3]
        await self.status.write(body, rv.conditions(spec, everything), generation=generation)
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

    async def secrets_changed(self, body: Mapping[str, Any]) -> bool:
        """Whether the referenced Secrets (read by name) changed since the last reconcile.

        The operator never lists or watches Secrets: the status timer calls this.
        """
        ns, name, _uid, _ = ids(body)
        seen = self._secrets_seen.get((ns, name))
        if seen is None:
            return False  # not reconciled by this process yet: kopf's handlers will
        try:
            spec = parse_resource(body, default_image=self.config.default_image)
        except SpecError:
            return False
        resolved = await secretrefs.resolve(self.api, self.config.allow, spec)
        return resolved.digest != seen

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
        ns, name, _uid, _ = ids(body)
        try:
            spec = parse_resource(body, default_image=self.config.default_image)
        except SpecError:
            return  # reported by reconcile
        async with self._lock(ns, name):
            old = self.status.current(body)
            known = st.conditions_from_status(old)
            deployment = await self.api.get_deployment(ns, Names.of(name).deployment)
            doc = await self.agent_status(ns, name, deployment)
            agent = rv.kept_agent_condition(known) or st.agent_condition(
                deployment, paused=spec.paused, agent_doc=doc
            )
            conds = {**known, agent.type: agent}
            ready = st.ready_condition(conds, paused=spec.paused)
            extra: dict[str, Any] = {
                "agent": agent_block(spec, deployment, self.config.default_image)
            }
            extra.update(st.agent_fields(doc))
            await self.status.write(body, [ready, agent], extra)

    # ------------------------------------------------------------------ delete

    async def drain(self, body: Mapping[str, Any], *, started: datetime) -> dr.DrainStep:
        """One look at a connector being deleted: its agent's backlog against the deadline.

        Writes status.drain and Ready=False (reason Draining, then Drained,
        DrainTimedOut, DrainUnreadable or DrainSkipped: each new reason is an
        event), and posts an event whenever the backlog changed while draining.
        status.drain.lastReadAt is the last look that read a backlog: how long
        /status has been unreadable counts from it (or from `started`), across
        kopf's retries and operator restarts.
        """
        ns, name, _uid, _ = ids(body)
        if started.tzinfo is None:
            started = started.replace(tzinfo=UTC)
        now = datetime.now(tz=UTC)
        elapsed = (now - started).total_seconds()
        try:
            spec = parse_resource(body, default_image=self.config.default_image)
        except SpecError as e:
            return dr.DrainStep(dr.SKIPPED, f"invalid spec, not draining: {e}", None)
        async with self._lock(ns, name):
            deployment = await self.api.get_deployment(ns, Names.of(name).deployment)
            running = st.agent_condition(deployment, paused=spec.paused).status == st.TRUE
            doc = await self.agent_status(ns, name, deployment) if running else None
            fields = st.agent_fields(doc)
            backlog = fields.get("backlog")
            previous = self.status.current(body).get("drain") or {}
            # Kept in status.drain (like kopf keeps `started`): a restart does not reset it.
            last_read = now if backlog is not None else _last_read(previous, started)
            step = dr.decide(
                timeout_seconds=spec.drain.timeout_seconds,
                elapsed_seconds=elapsed,
                agent_running=running,
                backlog=backlog,
                unread_seconds=(now - (last_read or started)).total_seconds(),
                claim=Names.of(name).pvc,
                retained=spec.state.retained,
            )
            reason = st.READY_DRAINING if not step.done else step.event_reason
            block = _drain_block(step, started, spec.drain.timeout_seconds, last_read)
            extra = {**fields, "drain": block}
            await self.status.write(
                body, [st.Condition(st.READY, st.FALSE, reason, step.message)], extra
            )
            # A new phase is a new Ready reason (posted by the status writer); progress here.
            progressed = previous.get("phase") == step.phase == dr.DRAINING and (
                previous.get("backlog") != step.backlog
            )
            if progressed and self.post_event is not None:
                self.post_event(body, step.event_type, step.event_reason, step.message)
            logger.info("%s/%s: drain %s: %s", ns, name, step.phase, step.message)
            return step


def _last_read(previous: Mapping[str, Any], started: datetime) -> datetime | None:
    """status.drain.lastReadAt of this deletion (None: not read since it started)."""
    parsed = st.parse_rfc3339(previous.get("lastReadAt"))
    if parsed is None:
        return None
    # Seconds precision: a read in the deletion's first second counts from its start.
    return parsed if parsed >= started.replace(microsecond=0) else None


def _drain_block(
    step: dr.DrainStep, started: datetime, timeout_seconds: int, last_read: datetime | None
) -> dict[str, Any]:
    block: dict[str, Any] = {
        "phase": step.phase,
        "startedAt": st.now_rfc3339(started),
        "deadline": st.now_rfc3339(started + timedelta(seconds=timeout_seconds)),
        "message": step.message,
        # None deletes it (the status write is a merge patch): no stale count once unreadable.
        "backlog": step.backlog,
    }
    if last_read is not None:
        block["lastReadAt"] = st.now_rfc3339(last_read)
    return block
