"""A connector's children on the cluster: refuse to adopt an object whose name
is taken by someone else, apply the rest by server-side apply, and delete our
ServiceMonitor (never someone else's) once monitoring is off."""

from __future__ import annotations

from typing import Any

from sipstack_operator.api import KubeApi
from sipstack_operator.ownership import owned_by
from sipstack_operator.render import Names
from sipstack_operator.spec import ConnectorSpec


async def foreign(
    api: KubeApi, spec: ConnectorSpec, children: list[dict[str, Any]], uid: str
) -> list[str]:
    """Children whose name is taken by an object this connector does not own.

    Server-side apply with force would take such an object over (and garbage
    collection would later delete it with the connector): it is refused instead.
    """
    problems: list[str] = []
    for child in children:
        existing = await api.get_child(child)
        if existing is None or owned_by(existing, spec.name, uid):
            continue
        problems.append(
            f"{child['kind']} {child['metadata']['name']} already exists and is not owned "
            "by this connector: not adopted (delete or rename it)"
        )
    return problems


async def apply_all(api: KubeApi, children: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Server-side apply each child in order; the live objects (raises ApiException)."""
    return [await api.apply(child) for child in children]


async def prune_service_monitor(api: KubeApi, spec: ConnectorSpec, uid: str) -> None:
    """Delete our ServiceMonitor after monitoring was disabled (never someone else's)."""
    if not await api.service_monitors_available():
        return
    sm_name = Names.of(spec.name).service_monitor
    existing = await api.get_service_monitor(spec.namespace, sm_name)
    if existing is None:
        return
    owners = (existing.get("metadata") or {}).get("ownerReferences") or []
    if uid and any(o.get("uid") == uid for o in owners):
        await api.delete_service_monitor(spec.namespace, sm_name)
