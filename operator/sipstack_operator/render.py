"""Pure rendering: connector settings + resolved secret data -> child manifests.

No kopf, no kubernetes client, no I/O: the same function serves the operator,
`sipstack-operator render` (GitOps preview) and the golden tests.

Children (all in the connector's namespace, all labelled app.kubernetes.io/*):

- Secret ``<name>-agent-env``: the agent's environment (consumed with envFrom),
  without a single secret value: the API key and the passwords reach the agent
  as files (``API_KEY_FILE``, ``DB_PASSWORD_FILE``, ``AMI_PASSWORD_FILE``) of a
  read-only projected volume at /etc/sipstack/secrets that names the
  referenced Secrets themselves (no copy of a credential in any child): a
  pod (re)started after a Secret was deleted cannot mount it (fail closed).
  The files are mode 0440, owned by root and the pod's fsGroup (the agent's
  group 10001: Dockerfile.agent runs as 10001:10001).
- ConfigMap ``<name>-agent-files``: only with tenant maps. Each map is a JSON
  file mounted read-only at /etc/sipstack/tenant-maps and named by
  ``DID_TENANT_MAP_FILE`` / ``ACCOUNTCODE_TENANT_MAP_FILE``: a map at the CRD's
  limits is far larger than the 128 KiB exec allows one environment string.
- PersistentVolumeClaim ``<name>-state``: the agent's SQLite state at /data,
  labelled ``sipstack.com/connector=<name>``. Owned by the connector only
  with ``spec.state.whenDeleted: Delete``; with Retain (the default) it has
  no owner reference, so it outlives the connector and a connector
  re-created with the same name adopts it (same claim name).
- Deployment ``<name>-agent``: one replica (0 when paused), strategy Recreate,
  restricted security context, probes on /healthz and /readyz, and the pod
  template annotation ``sipstack.com/config-hash`` = sha256 of what the pod
  reads outside its template: the env Secret's data, the tenant maps and the
  value of every referenced Secret key (API key, passwords, CA bundle), so a
  rotated key rolls the pod; the API key is always in it, so the hash cannot
  be brute-forced for a weak password without knowing the key. Image,
  volumes, resources and probes are in the template itself, so a change
  there rolls the pod without the hash; nothing else does (a ServiceMonitor
  or label edit, an operator upgrade: the operator's version label is on the
  children's metadata, never on the pod template).
- Service ``<name>-metrics``: port 8000 named ``metrics``.
- ServiceMonitor ``<name>-agent`` (monitoring.coreos.com/v1): only when
  enabled *and* the caller says the CRD exists (``service_monitor_available``).

Owner references are added here, not with kopf.adopt, when an `Owner` is
given (the operator passes the CR's uid; `render` without a cluster has none):
the result is then complete and testable, and the CR's own labels are not
copied onto the children as kopf.adopt would do.
"""

from __future__ import annotations

import base64
import hashlib
import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sipstack_operator import __version__
from sipstack_operator.spec import API_VERSION, KIND, ConnectorSpec, SecretKeyRef

Manifest = dict[str, Any]

DEFAULT_AGENT_IMAGE = f"sipstack/connector-asterisk:{__version__}"
AGENT_UID = 10001
MONITORING_PORT = 8000
STATE_DIR = "/data"
CA_MOUNT_DIR = "/etc/sipstack/db-ca"
CA_FILE = "ca.crt"
TENANT_MAP_DIR = "/etc/sipstack/tenant-maps"
SECRETS_DIR = "/etc/sipstack/secrets"
# root:fsGroup is how the kubelet owns projected files: group-readable for the agent.
SECRETS_MODE = 0o440
# Agent secret variable -> its file in the projected volume (read via <variable>_FILE).
SECRET_FILES: dict[str, str] = {
    "API_KEY": "api-key",
    "DB_PASSWORD": "db-password",
    "AMI_PASSWORD": "ami-password",
}
# Agent variable -> its file in the <name>-agent-files ConfigMap (read via <variable>_FILE).
TENANT_MAP_FILES: dict[str, str] = {
    "DID_TENANT_MAP": "did-tenant-map.json",
    "ACCOUNTCODE_TENANT_MAP": "accountcode-tenant-map.json",
}
HASH_ANNOTATION = "sipstack.com/config-hash"
CONNECTOR_LABEL = "sipstack.com/connector"
PART_OF = "sipstack-connector-asterisk"
MANAGED_BY = "sipstack-operator"
APP_NAME = "sipstack-agent"

# Resolved secret values, keyed by (secret name, key). Values are text.
SecretData = Mapping[tuple[str, str], str]


class MissingSecretError(LookupError):
    """A referenced Secret key has no resolved value (names it, never a value)."""

    def __init__(self, ref: SecretKeyRef) -> None:
        super().__init__(f"{ref.describe()} is not available")
        self.ref = ref


@dataclass(frozen=True)
class Owner:
    """The AsteriskConnector that owns the children."""

    name: str
    uid: str
    api_version: str = API_VERSION
    kind: str = KIND

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class Names:
    env_secret: str
    files: str
    deployment: str
    pvc: str
    service: str
    service_monitor: str

    @classmethod
    def of(cls, name: str) -> Names:
        return cls(
            env_secret=f"{name}-agent-env",
            files=f"{name}-agent-files",
            deployment=f"{name}-agent",
            pvc=f"{name}-state",
            service=f"{name}-metrics",
            service_monitor=f"{name}-agent",
        )


def selector_labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": APP_NAME, "app.kubernetes.io/instance": name}


def pod_template_labels(name: str, component: str) -> dict[str, str]:
    """Labels without the operator's version: an operator upgrade must not roll the pod."""
    return {
        **selector_labels(name),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def labels(name: str, component: str) -> dict[str, str]:
    """Labels of the children's metadata (with the version of the operator that wrote them)."""
    return {**pod_template_labels(name, component), "app.kubernetes.io/version": __version__}


def _secret(data: SecretData, ref: SecretKeyRef) -> str:
    try:
        return data[(ref.name, ref.key)]
    except KeyError:
        raise MissingSecretError(ref) from None


def _flag(value: bool) -> str:
    return "true" if value else "false"


def secret_file_refs(spec: ConnectorSpec) -> dict[str, SecretKeyRef]:
    """Agent secret variable -> the Secret key the agent reads it from, as a file."""
    refs: dict[str, SecretKeyRef] = {"API_KEY": spec.api_key}
    if spec.database.password is not None:
        refs["DB_PASSWORD"] = spec.database.password
    if spec.cel.mode == "ami" and spec.cel.ami is not None:
        refs["AMI_PASSWORD"] = spec.cel.ami.password
    return refs


def secret_file_env(spec: ConnectorSpec) -> dict[str, str]:
    """`<VAR>_FILE` -> the mounted file, for every secret the agent needs (no values)."""
    return {
        f"{var}_FILE": posixpath.join(SECRETS_DIR, SECRET_FILES[var])
        for var in secret_file_refs(spec)
    }


def agent_env(spec: ConnectorSpec) -> dict[str, str]:
    """The agent's environment (what goes into the env Secret), sorted by name.

    No secret values: those are files of the projected volume (`secrets_volume`)."""
    db = spec.database
    env: dict[str, str] = {
        **secret_file_env(spec),
        "CUSTOMER_ID": str(spec.customer_id),
        "HOST_HOSTNAME": spec.hostname or spec.name,
        "CONNECTOR_ID": f"{spec.namespace}/{spec.name}",
        "DB_TYPE": db.type,
        "DB_HOST": db.host,
        "DB_PORT": str(db.port),
        "DB_USER": db.user,
        "DB_NAME": db.name,
        "DB_TABLE_CDR": db.table_cdr,
        "DB_TABLE_CEL": db.table_cel,
        "DB_TIMEZONE": db.timezone,
        "CEL_MODE": spec.cel.mode,
        "CALL_SHIPPING_MODE": spec.shipping.mode,
        "CDR_POLL_INTERVAL": str(spec.shipping.poll_interval_seconds),
        "CDR_BATCH_SIZE": str(spec.shipping.batch_size),
        "LONG_CALL_UPDATE_INTERVAL": str(spec.shipping.long_call_update_interval_seconds),
        # "none": no recording directories (empty would mean the agent's default).
        "RECORDING_PATHS": ",".join(spec.recordings.paths) if spec.recordings.enabled else "none",
        "RECORDING_UPLOAD": _flag(spec.recordings.enabled and spec.recordings.upload),
        "DELETE_RECORDINGS_AFTER_UPLOAD": _flag(
            spec.recordings.enabled and spec.recordings.delete_after_upload
        ),
        "ASTERISK_EXT_MIN_LENGTH": str(spec.direction.ext_min_length),
        "ASTERISK_EXT_MAX_LENGTH": str(spec.direction.ext_max_length),
        # An empty list is "+" alone ("+" is always international; empty = 011,00).
        "ASTERISK_INTL_PREFIXES": ",".join(spec.direction.intl_prefixes) or "+",
        "STATE_DIR": STATE_DIR,
        "MONITORING_PORT": str(MONITORING_PORT),
        "LOG_FORMAT": "json",
    }
    optional: dict[str, str] = {
        "REGION": spec.region,
        "API_URL": spec.api_url,
        "API_ALLOW_INSECURE_HTTP": "true" if spec.api_allow_insecure_http else "",
        "TENANT": spec.tenant,
        "DB_TABLE_RECORDINGS": db.table_recordings if spec.recordings.enabled else "",
        "DB_SSLMODE": db.ssl_mode,
        "KNOWN_TRUNKS": ",".join(spec.direction.known_trunks),
        "DEFAULT_COUNTRY_CODE": spec.direction.default_country_code,
    }
    env.update({k: v for k, v in optional.items() if v})
    files = agent_files(spec)
    for var, file_name in TENANT_MAP_FILES.items():
        if file_name in files:
            env[f"{var}_FILE"] = posixpath.join(TENANT_MAP_DIR, file_name)
    if db.ca is not None:
        env["DB_SSLROOTCERT"] = posixpath.join(CA_MOUNT_DIR, CA_FILE)
    if spec.cel.mode == "csv":
        env["CEL_CSV_PATH"] = spec.cel.csv_path
    if spec.cel.mode == "ami" and spec.cel.ami is not None:
        ami = spec.cel.ami
        env["AMI_HOST"] = ami.host
        env["AMI_PORT"] = str(ami.port)
        env["AMI_USERNAME"] = ami.username
        env["AMI_TLS"] = _flag(ami.tls)
    return dict(sorted(env.items()))


def agent_files(spec: ConnectorSpec) -> dict[str, str]:
    """The files of the ConfigMap <name>-agent-files: each non-empty tenant map as
    one JSON object (UTF-8; the agent reads it through <variable>_FILE)."""
    maps = {
        "DID_TENANT_MAP": spec.tenants.did_map,
        "ACCOUNTCODE_TENANT_MAP": spec.tenants.account_code_map,
    }
    return {
        TENANT_MAP_FILES[var]: json.dumps(dict(pairs), ensure_ascii=False, separators=(",", ":"))
        for var, pairs in maps.items()
        if pairs
    }


def secrets_digest(spec: ConnectorSpec, secrets: SecretData) -> str:
    """sha256 (hex) of every referenced Secret key's value (API key, passwords, CA):
    part of the config hash, so a rotated value rolls the pod. Raises
    `MissingSecretError` for a key without a value."""
    values = {f"{ref.name}/{ref.key}": _secret(secrets, ref) for ref in spec.secret_refs()}
    text = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def config_hash(spec: ConnectorSpec, env: Mapping[str, str], secrets: SecretData) -> str:
    """sha256 (hex) over the data the pod reads from Secrets and ConfigMaps: its env, the
    mounted files (tenant maps) and the referenced Secret values (`secrets_digest`)."""
    payload = {
        "env": dict(sorted(env.items())),
        "files": agent_files(spec),
        "secrets": secrets_digest(spec, secrets),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _meta(spec: ConnectorSpec, name: str, component: str, owner: Owner | None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": spec.namespace,
        "labels": labels(spec.name, component),
    }
    if owner is not None:
        meta["ownerReferences"] = [owner.reference()]
    return meta


def render_env_secret(
    spec: ConnectorSpec, env: Mapping[str, str], owner: Owner | None = None
) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(spec, Names.of(spec.name).env_secret, "config", owner),
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in sorted(env.items())},
    }


def render_files_config_map(
    spec: ConnectorSpec, files: Mapping[str, str], owner: Owner | None = None
) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(spec, Names.of(spec.name).files, "config", owner),
        "data": dict(sorted(files.items())),
    }


def render_pvc(spec: ConnectorSpec, owner: Owner | None = None) -> Manifest:
    pvc_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": spec.state.size}},
    }
    if spec.state.storage_class_name:
        pvc_spec["storageClassName"] = spec.state.storage_class_name
    meta = _meta(spec, Names.of(spec.name).pvc, "state", None if spec.state.retained else owner)
    meta["labels"][CONNECTOR_LABEL] = spec.name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta,
        "spec": pvc_spec,
    }


def _probe(path: str, *, period: int, failures: int, initial_delay: int = 0) -> dict[str, Any]:
    probe: dict[str, Any] = {
        "httpGet": {"path": path, "port": "metrics"},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }
    if initial_delay:
        probe["initialDelaySeconds"] = initial_delay
    return probe


def secrets_volume(spec: ConnectorSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """(mount, volume): the referenced Secret keys as read-only files in SECRETS_DIR.

    A projected volume naming the user's Secrets (one source per Secret), not a
    copy: rotation reaches the files, and a deleted Secret or key cannot be
    mounted by a new pod. Not `optional`: the pod does not start without them.
    """
    by_secret: dict[str, list[dict[str, str]]] = {}
    for var, ref in secret_file_refs(spec).items():
        by_secret.setdefault(ref.name, []).append({"key": ref.key, "path": SECRET_FILES[var]})
    sources = [{"secret": {"name": name, "items": items}} for name, items in by_secret.items()]
    mount = {"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": True}
    volume = {"name": "secrets", "projected": {"defaultMode": SECRETS_MODE, "sources": sources}}
    return mount, volume


def render_deployment(
    spec: ConnectorSpec, digest: str, owner: Owner | None = None, *, default_image: str = ""
) -> Manifest:
    names = Names.of(spec.name)
    secrets_mount, secrets_vol = secrets_volume(spec)
    mounts: list[dict[str, Any]] = [
        {"name": "state", "mountPath": STATE_DIR},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - the container's own emptyDir
        secrets_mount,
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "state", "persistentVolumeClaim": {"claimName": names.pvc}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
        secrets_vol,
    ]
    if spec.database.ca is not None:
        mounts.append({"name": "db-ca", "mountPath": CA_MOUNT_DIR, "readOnly": True})
        volumes.append(
            {
                "name": "db-ca",
                "secret": {
                    "secretName": spec.database.ca.name,
                    "items": [{"key": spec.database.ca.key, "path": CA_FILE}],
                    "defaultMode": 0o444,
                },
            }
        )
    if agent_files(spec):
        mounts.append({"name": "agent-files", "mountPath": TENANT_MAP_DIR, "readOnly": True})
        volumes.append(
            {"name": "agent-files", "configMap": {"name": names.files, "defaultMode": 0o444}}
        )
    if spec.cel.mode == "csv" and spec.cel.csv_volume is not None:
        mounts.append(
            {
                "name": "cel-csv",
                "mountPath": posixpath.dirname(spec.cel.csv_path),
                "readOnly": True,
            }
        )
        volumes.append({"name": "cel-csv", **spec.cel.csv_volume})
    if spec.recordings.enabled and spec.recordings.volume is not None:
        mounts.append(
            {
                "name": "recordings",
                "mountPath": spec.recordings.paths[0],
                "readOnly": not spec.recordings.delete_after_upload,
            }
        )
        volumes.append({"name": "recordings", **spec.recordings.volume})

    container: dict[str, Any] = {
        "name": "agent",
        "image": spec.image or default_image or DEFAULT_AGENT_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "envFrom": [{"secretRef": {"name": names.env_secret}}],
        "ports": [{"name": "metrics", "containerPort": MONITORING_PORT, "protocol": "TCP"}],
        "startupProbe": _probe("/healthz", period=2, failures=60),
        "livenessProbe": _probe("/healthz", period=20, failures=3),
        "readinessProbe": _probe("/readyz", period=10, failures=3),
        "resources": dict(spec.resources),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": AGENT_UID,
            "runAsGroup": AGENT_UID,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": AGENT_UID,
            "runAsGroup": AGENT_UID,
            "fsGroup": AGENT_UID,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in spec.tolerations]
    if spec.affinity:
        pod_spec["affinity"] = dict(spec.affinity)

    pod_labels = {**dict(spec.pod_labels), **pod_template_labels(spec.name, "agent")}
    pod_annotations = {**dict(spec.pod_annotations), HASH_ANNOTATION: digest}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(spec, names.deployment, "agent", owner),
        "spec": {
            "replicas": 0 if spec.paused else 1,
            "revisionHistoryLimit": 3,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector_labels(spec.name)},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                "spec": pod_spec,
            },
        },
    }


def render_service(spec: ConnectorSpec, owner: Owner | None = None) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(spec, Names.of(spec.name).service, "metrics", owner),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(spec.name),
            "ports": [
                {
                    "name": "metrics",
                    "port": MONITORING_PORT,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                }
            ],
        },
    }


def render_service_monitor(spec: ConnectorSpec, owner: Owner | None = None) -> Manifest:
    meta = _meta(spec, Names.of(spec.name).service_monitor, "metrics", owner)
    meta["labels"] = {**dict(spec.service_monitor.labels), **meta["labels"]}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": meta,
        "spec": {
            "selector": {
                "matchLabels": {
                    **selector_labels(spec.name),
                    "app.kubernetes.io/component": "metrics",
                }
            },
            "namespaceSelector": {"matchNames": [spec.namespace]},
            "endpoints": [
                {
                    "port": "metrics",
                    "path": "/metrics",
                    "interval": spec.service_monitor.interval,
                }
            ],
        },
    }


def render(
    spec: ConnectorSpec,
    secrets: SecretData,
    *,
    owner: Owner | None = None,
    service_monitor_available: bool = True,
    default_image: str = "",
) -> list[Manifest]:
    """All children, in apply order. Raises `MissingSecretError` for a missing key."""
    env = agent_env(spec)
    digest = config_hash(spec, env, secrets)
    files = agent_files(spec)
    children = [
        render_env_secret(spec, env, owner),
        *([render_files_config_map(spec, files, owner)] if files else []),
        render_pvc(spec, owner),
        render_deployment(spec, digest, owner, default_image=default_image),
        render_service(spec, owner),
    ]
    if spec.service_monitor.enabled and service_monitor_available:
        children.append(render_service_monitor(spec, owner))
    return children
