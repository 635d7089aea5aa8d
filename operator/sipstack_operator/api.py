"""The Kubernetes API calls the operator makes itself (besides kopf's own).

Every call goes through `KubeApi`, and every method declares the API call it
makes in `API_CALLS` (group, resource, verb). The RBAC test compares that
table, plus `KOPF_CALLS` (what kopf itself needs for the handlers in
handlers.py), against operator/sipstack_operator/data/rbac.yaml.

The official `kubernetes` client is synchronous: calls run in worker threads
(`asyncio.to_thread`) and return plain dicts (raw JSON, no model classes).
Children are applied with server-side apply (PATCH, content type
application/apply-patch+yaml, a field manager and force=true): idempotent, no
read-modify-write race, and fields the operator stops rendering are removed.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import kubernetes.client
import kubernetes.config
from kubernetes.client.exceptions import ApiException

from sipstack_operator.spec import GROUP, PLURAL, VERSION

FIELD_MANAGER = "sipstack-operator"
PEERING_GROUP = "kopf.dev"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
MERGE_CONTENT_TYPE = "application/merge-patch+json"


@dataclass(frozen=True, order=True)
class ApiCall:
    group: str  # "" = core
    resource: str  # plural, "x/status" for a subresource
    verb: str


API_CALLS: set[ApiCall] = set()

# What kopf does on the operator's behalf for the handlers in handlers.py:
# watch the connectors (list, watch), patch them (finalizer, progress
# annotations) and their status, post Events. Secrets are never listed or
# watched: the status timer re-reads the referenced ones by name (rotation).
KOPF_CALLS: frozenset[ApiCall] = frozenset(
    {
        ApiCall(GROUP, PLURAL, "list"),
        ApiCall(GROUP, PLURAL, "watch"),
        ApiCall(GROUP, PLURAL, "patch"),
        ApiCall(GROUP, f"{PLURAL}/status", "patch"),
        ApiCall("", "events", "create"),
        # Peering: watch the peering object, patch our keep-alive into its status.
        ApiCall(PEERING_GROUP, "kopfpeerings", "list"),
        ApiCall(PEERING_GROUP, "kopfpeerings", "watch"),
        ApiCall(PEERING_GROUP, "kopfpeerings", "patch"),
        ApiCall(PEERING_GROUP, "clusterkopfpeerings", "list"),
        ApiCall(PEERING_GROUP, "clusterkopfpeerings", "watch"),
        ApiCall(PEERING_GROUP, "clusterkopfpeerings", "patch"),
    }
)

# The children carry ownerReferences with blockOwnerDeletion=true: with the
# OwnerReferencesPermissionEnforcement admission plugin that needs update on
# the owner's finalizers subresource.
ADMISSION_CALLS: frozenset[ApiCall] = frozenset({ApiCall(GROUP, f"{PLURAL}/finalizers", "update")})

F = TypeVar("F", bound=Callable[..., Any])


def uses(group: str, resource: str, *verbs: str) -> Callable[[F], F]:
    """Declare the API calls a method makes (collected into API_CALLS)."""
    for verb in verbs:
        API_CALLS.add(ApiCall(group, resource, verb))

    def decorator(fn: F) -> F:
        return fn

    return decorator


# kind -> (group, version, plural) of the children we apply.
CHILD_RESOURCES: dict[str, tuple[str, str, str]] = {
    "Secret": ("", "v1", "secrets"),
    "ConfigMap": ("", "v1", "configmaps"),
    "PersistentVolumeClaim": ("", "v1", "persistentvolumeclaims"),
    "Deployment": ("apps", "v1", "deployments"),
    "Service": ("", "v1", "services"),
    "ServiceMonitor": ("monitoring.coreos.com", "v1", "servicemonitors"),
}


def _path(group: str, version: str, plural: str, namespace: str, name: str = "") -> str:
    base = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    path = f"{base}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


def load_client_configuration(kubeconfig: str | None = None) -> kubernetes.client.Configuration:
    """In-cluster service account if present, else the kubeconfig (KUBECONFIG or ~/.kube/config).

    The kubernetes client reads KUBECONFIG only at import time, so the file is
    passed explicitly here.
    """
    cfg = kubernetes.client.Configuration()
    kubeconfig = kubeconfig or os.environ.get("KUBECONFIG") or None
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        kubernetes.config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    else:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=cfg
        )
    cfg.connection_pool_maxsize = 32
    return cfg


class KubeApi:
    """The operator's own API calls; methods are async, return plain dicts."""

    def __init__(
        self,
        configuration: kubernetes.client.Configuration,
        *,
        discovery_ttl: float = 60.0,
        request_timeout: float = 30.0,
    ) -> None:
        self.client = kubernetes.client.ApiClient(configuration)
        self.discovery_ttl = discovery_ttl
        self.request_timeout = request_timeout
        self._discovery: dict[str, tuple[float, bool]] = {}

    def close(self) -> None:
        self.client.close()  # type: ignore[no-untyped-call]

    # ---------------------------------------------------------------- transport

    def _call_sync(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        return self._request(method, path, headers, body, query)

    def _request(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: Any,
        query: Mapping[str, str] | None,
    ) -> Any:
        # ApiClient.param_serialize adds authentication (token, basic auth) and the host.
        method_, url, header_params, serialized_body, post_params = self.client.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.client.call_api(
            method_,
            url,
            header_params=header_params,
            body=serialized_body,
            post_params=post_params,
            _request_timeout=self.request_timeout,
        )
        response.read()  # type: ignore[no-untyped-call]
        if not 200 <= response.status <= 299:
            raise ApiException(http_resp=response)
        data = response.data
        return json.loads(data) if data else None

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self._call_sync, method, path, **kwargs)

    # ---------------------------------------------------------------- children

    # Server-side apply is a PATCH; applying an object that does not exist yet
    # creates it and is authorized as both patch and create.
    @uses("", "secrets", "patch", "create")
    @uses("", "configmaps", "patch", "create")
    @uses("", "persistentvolumeclaims", "patch", "create")
    @uses("apps", "deployments", "patch", "create")
    @uses("", "services", "patch", "create")
    @uses("monitoring.coreos.com", "servicemonitors", "patch", "create")
    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply of one child (creates it if missing); returns the live object."""
        group, version, plural = CHILD_RESOURCES[manifest["kind"]]
        meta = manifest["metadata"]
        result: dict[str, Any] = await self._call(
            "PATCH",
            _path(group, version, plural, meta["namespace"], meta["name"]),
            body=manifest,
            query={"fieldManager": FIELD_MANAGER, "force": "true"},
            content_type=APPLY_CONTENT_TYPE,
        )
        return result

    @uses("", "secrets", "get")
    @uses("", "configmaps", "get")
    @uses("", "persistentvolumeclaims", "get")
    @uses("apps", "deployments", "get")
    @uses("", "services", "get")
    @uses("monitoring.coreos.com", "servicemonitors", "get")
    async def get_child(self, manifest: Mapping[str, Any]) -> dict[str, Any] | None:
        """The live object a child manifest would be applied to (None: there is none)."""
        group, version, plural = CHILD_RESOURCES[manifest["kind"]]
        meta = manifest["metadata"]
        return await self._get(group, version, plural, meta["namespace"], meta["name"])

    @uses("", "secrets", "get")
    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get("", "v1", "secrets", namespace, name)

    @uses("apps", "deployments", "get")
    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get("apps", "v1", "deployments", namespace, name)

    @uses("apps", "deployments", "patch")
    async def scale_deployment(
        self, namespace: str, name: str, replicas: int, *, field_manager: str
    ) -> None:
        """Set spec.replicas (merge patch; the next apply with force takes it back)."""
        try:
            await self._call(
                "PATCH",
                _path("apps", "v1", "deployments", namespace, name),
                body={"spec": {"replicas": replicas}},
                query={"fieldManager": field_manager},
                content_type=MERGE_CONTENT_TYPE,
            )
        except ApiException as e:
            if e.status != 404:
                raise

    @uses("monitoring.coreos.com", "servicemonitors", "get")
    async def get_service_monitor(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get("monitoring.coreos.com", "v1", "servicemonitors", namespace, name)

    @uses("monitoring.coreos.com", "servicemonitors", "delete")
    async def delete_service_monitor(self, namespace: str, name: str) -> None:
        try:
            await self._call(
                "DELETE", _path("monitoring.coreos.com", "v1", "servicemonitors", namespace, name)
            )
        except ApiException as e:
            if e.status != 404:
                raise

    @uses(GROUP, f"{PLURAL}/status", "patch")
    async def patch_connector_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self._call(
                "PATCH",
                _path(GROUP, VERSION, PLURAL, namespace, name) + "/status",
                body={"status": dict(status)},
                content_type=MERGE_CONTENT_TYPE,
            )
        except ApiException as e:
            if e.status == 404:  # deleted meanwhile
                return None
            raise
        return result

    async def _get(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self._call(
                "GET", _path(group, version, plural, namespace, name)
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return result

    # ---------------------------------------------------------------- peering

    @uses(PEERING_GROUP, "kopfpeerings", "create")
    @uses(PEERING_GROUP, "clusterkopfpeerings", "create")
    async def create_peering(self, namespace: str | None, name: str) -> bool:
        """Create kopf's peering object (KopfPeering in `namespace`, else ClusterKopfPeering).

        True when it exists afterwards; False when the kopf.dev CRD is not installed.
        """
        kind, plural = (
            ("KopfPeering", "kopfpeerings")
            if namespace
            else (
                "ClusterKopfPeering",
                "clusterkopfpeerings",
            )
        )
        meta: dict[str, Any] = {"name": name}
        path = f"/apis/{PEERING_GROUP}/v1/{plural}"
        if namespace:
            meta["namespace"] = namespace
            path = _path(PEERING_GROUP, "v1", plural, namespace)
        body = {"apiVersion": f"{PEERING_GROUP}/v1", "kind": kind, "metadata": meta}
        try:
            await self._call("POST", path, body=body)
        except ApiException as e:
            if e.status == 409:
                return True
            if e.status == 404:
                return False
            raise
        return True

    # ---------------------------------------------------------------- discovery

    async def has_resource(self, group: str, version: str, plural: str) -> bool:
        """Whether the API serves group/version/plural (discovery: needs no RBAC rule)."""
        key = f"{group}/{version}/{plural}"
        cached = self._discovery.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.discovery_ttl:
            return cached[1]
        try:
            doc = await self._call("GET", f"/apis/{group}/{version}")
            found = any(r.get("name") == plural for r in (doc or {}).get("resources", []))
        except ApiException as e:
            if e.status not in (404, 503):
                raise
            found = False
        self._discovery[key] = (now, found)
        return found

    async def service_monitors_available(self) -> bool:
        return await self.has_resource("monitoring.coreos.com", "v1", "servicemonitors")
