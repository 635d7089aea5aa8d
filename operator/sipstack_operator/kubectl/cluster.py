"""The plugin's API calls, with the user's credentials (not the operator's).

Credentials: `--kubeconfig` or KUBECONFIG or ~/.kube/config (with `--context`),
else, inside a pod, its service account. What the user needs (docs/operator.md,
"kubectl sipstack"): get and list on asteriskconnectors for `status`, plus patch
for `resend` and `dead-letters`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kubernetes.client
import kubernetes.config
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from sipstack_operator.spec import GROUP, PLURAL, VERSION

SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
MERGE_PATCH = "application/merge-patch+json"
TIMEOUT = 15.0  # seconds per API call


class ClusterError(Exception):
    """The cluster could not be reached or refused the call (message for the user)."""


class NotFoundError(ClusterError):
    pass


@dataclass(frozen=True)
class Login:
    configuration: kubernetes.client.Configuration
    namespace: str  # the context's namespace (or the pod's), else "default"


def login(kubeconfig: str | None = None, context: str | None = None) -> Login:
    """The user's kubeconfig, else the pod's service account (in a cluster)."""
    cfg = kubernetes.client.Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG") or None
    try:
        if path is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            kubernetes.config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            try:
                with open(SA_NAMESPACE_FILE, encoding="utf-8") as f:
                    namespace = f.read().strip() or "default"
            except OSError:
                namespace = "default"
            return Login(cfg, namespace)
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, context=context, client_configuration=cfg
        )
        _, active = kubernetes.config.list_kube_config_contexts(config_file=path)  # type: ignore[no-untyped-call]
        if context is not None:
            contexts, _ = kubernetes.config.list_kube_config_contexts(config_file=path)  # type: ignore[no-untyped-call]
            active = next((c for c in contexts if c.get("name") == context), active)
        namespace = str(((active or {}).get("context") or {}).get("namespace") or "default")
    except (ConfigException, OSError, TypeError, ValueError) as e:
        raise ClusterError(f"no usable kubeconfig or service account: {e}") from None
    return Login(cfg, namespace)


def _explain(e: Exception, what: str) -> ClusterError:
    if isinstance(e, ApiException):
        if e.status == 404:
            return NotFoundError(f"{what}: not found")
        if e.status in (401, 403):
            return ClusterError(
                f"{what}: HTTP {e.status} {e.reason}: your account needs get, list (and for "
                "resend/dead-letters patch) on asteriskconnectors.sipstack.com"
            )
        return ClusterError(f"{what}: HTTP {e.status} {e.reason}")
    return ClusterError(f"{what}: cannot reach the cluster ({type(e).__name__}: {e})"[:400])


_ERRORS = (ApiException, urllib3.exceptions.HTTPError, OSError)


class Connectors:
    """AsteriskConnectors through the user's API credentials (plain dicts)."""

    def __init__(self, configuration: kubernetes.client.Configuration) -> None:
        configuration.retries = 1
        self.client = kubernetes.client.ApiClient(configuration)
        self.api = kubernetes.client.CustomObjectsApi(self.client)

    def close(self) -> None:
        self.client.close()  # type: ignore[no-untyped-call]

    def list(self, namespace: str | None) -> list[dict[str, Any]]:
        """The connectors of `namespace`, or of every namespace (None)."""
        what = f"list asteriskconnectors in {namespace or 'all namespaces'}"
        try:
            if namespace is None:
                got = self.api.list_cluster_custom_object(
                    GROUP, VERSION, PLURAL, _request_timeout=TIMEOUT
                )
            else:
                got = self.api.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, _request_timeout=TIMEOUT
                )
        except _ERRORS as e:
            raise _explain(e, what) from None
        items = got.get("items") if isinstance(got, Mapping) else None
        return [dict(i) for i in items or [] if isinstance(i, Mapping)]

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            got = self.api.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, _request_timeout=TIMEOUT
            )
        except _ERRORS as e:
            raise _explain(e, f"AsteriskConnector {namespace}/{name}") from None
        if not isinstance(got, Mapping):
            raise ClusterError(f"AsteriskConnector {namespace}/{name}: not an object")
        return dict(got)

    def annotate(self, namespace: str, name: str, key: str, value: str) -> None:
        body = {"metadata": {"annotations": {key: value}}}
        try:
            self.api.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                body,
                _content_type=MERGE_PATCH,
                _request_timeout=TIMEOUT,
            )
        except _ERRORS as e:
            raise _explain(e, f"annotate AsteriskConnector {namespace}/{name}") from None
