"""Writing a connector's status: conditions merged (a transition is logged and
posted as an event), top-level fields, one patch only when something changed,
and the last status written kept per connector (fresher than the body a timer
or a Secret event hands over). Also what the status says after an apply.

The caller holds the connector's lock (reconcile.py)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from sipstack_operator import status as st
from sipstack_operator.api import KubeApi
from sipstack_operator.metrics import OperatorMetrics
from sipstack_operator.spec import ConnectorSpec

logger = logging.getLogger("sipstack_operator")

# post_event(cr_body, event_type ("Normal"|"Warning"), reason, message)
PostEvent = Callable[[Mapping[str, Any], str, str, str], None]


def ids(body: Mapping[str, Any]) -> tuple[str, str, str, int | None]:
    """(namespace, name, uid, generation) of a connector."""
    meta = body.get("metadata") or {}
    generation = meta.get("generation")
    return (
        str(meta.get("namespace") or "default"),
        str(meta["name"]),
        str(meta.get("uid") or ""),
        int(generation) if generation is not None else None,
    )


class StatusWriter:
    def __init__(
        self, api: KubeApi, metrics: OperatorMetrics, post_event: PostEvent | None
    ) -> None:
        self.api = api
        self.metrics = metrics
        self.post_event = post_event
        # Last status written per (namespace, name, uid).
        self._written: dict[tuple[str, str, str], dict[str, Any]] = {}

    def forget(self, namespace: str, name: str) -> None:
        for key in [k for k in self._written if k[:2] == (namespace, name)]:
            del self._written[key]

    def current(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The connector's status as last written by this process, else as in `body`."""
        ns, name, uid, _ = ids(body)
        cached = self._written.get((ns, name, uid))
        return dict(cached) if cached is not None else dict(body.get("status") or {})

    async def write(
        self,
        body: Mapping[str, Any],
        conditions: list[st.Condition],
        extra: Mapping[str, Any] | None = None,
        *,
        generation: int | None = None,
    ) -> None:
        ns, name, uid, _ = ids(body)
        old = self.current(body)
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

    async def write_applied(
        self,
        body: Mapping[str, Any],
        spec: ConnectorSpec,
        deployment: Mapping[str, Any] | None,
        *,
        sm_available: bool,
        applied: st.Condition,
        default_image: str,
        generation: int | None,
    ) -> None:
        """The status after the children were applied: every condition and the agent block."""
        secrets_cond = st.Condition(
            st.SECRETS_RESOLVED, st.TRUE, "SecretsFound", found_message(spec)
        )
        agent = st.agent_condition(deployment, paused=spec.paused)
        monitoring = st.monitoring_condition(
            enabled=spec.service_monitor.enabled, available=sm_available
        )
        conds = {c.type: c for c in (applied, secrets_cond, agent, monitoring)}
        ready = st.ready_condition(conds, paused=spec.paused)
        extra: dict[str, Any] = {"agent": agent_block(spec, deployment, default_image)}
        if generation is not None:
            extra["observedGeneration"] = generation
        await self.write(
            body, [ready, applied, secrets_cond, agent, monitoring], extra, generation=generation
        )


def found_message(spec: ConnectorSpec) -> str:
    """The SecretsResolved=True message."""
    return f"{len(spec.secret_refs())} key(s) found in Secret(s) {', '.join(spec.secret_names())}"


def agent_block(
    spec: ConnectorSpec, deployment: Mapping[str, Any] | None, default_image: str
) -> dict[str, Any]:
    """status.agent: the image the Deployment runs and its ready replicas."""
    image = spec.image or default_image
    with contextlib.suppress(KeyError, IndexError, TypeError):
        image = (deployment or {})["spec"]["template"]["spec"]["containers"][0]["image"]
    ready = int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0)
    return {"image": image, "readyReplicas": ready}
