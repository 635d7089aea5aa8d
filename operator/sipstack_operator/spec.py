"""The AsteriskConnector spec as typed, frozen settings.

`parse_spec()` is the one place where defaults are applied: it accepts a spec
exactly as the API server stores it (CRD defaults filled in) and also a spec
as a user wrote it in a file (no defaults yet, e.g. for `sipstack-operator
render`). The defaults here equal the defaults in the CRD schema (a test
checks that they agree).

Problems the CRD schema would have rejected raise `SpecError`, which names
the field. No secret value ever passes through here: credentials are only
references (`SecretKeyRef`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

GROUP = "sipstack.com"
VERSION = "v1alpha1"
PLURAL = "asteriskconnectors"
KIND = "AsteriskConnector"
API_VERSION = f"{GROUP}/{VERSION}"

# region -> API host: a copy, as data, of the agent's REGION_HOSTS
# (the agent's config package; a test keeps the two equal). The operator's
# default allow-list of API hosts (allowlist.py) is these hosts.
REGION_HOSTS: Mapping[str, str] = {
    "ca1": "api-ca1.sipstack.com",
    "us1": "api-us1.sipstack.com",
    "us2": "api-us2.sipstack.com",
    "dev": "api-dev.sipstack.com",
}
REGIONS = tuple(REGION_HOSTS)
DB_TYPES = ("postgresql", "mysql")
DB_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
CEL_MODES = ("db", "csv", "ami")
SHIPPING_MODES = ("complete", "progressive")
WHEN_DELETED = ("Retain", "Delete")
DEFAULT_DRAIN_TIMEOUT = 600
MAX_NAME_LENGTH = 55
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

# spec.apiUrl, as the agent's API_URL check (its config package) accepts it: http(s)
# (any case), a host without credentials (a name, or an IPv6 literal in
# brackets), an optional port up to 65535, no whitespace. The CRD carries the
# same two regular expressions (its `pattern` and a CEL rule; a test keeps the
# three equal and checks them against the agent's loader on a table of URLs).
# They may be stricter than the agent (ASCII only: punycode a host name,
# percent-encode a path), never looser: a URL the API server takes must not stop the agent.
_HEX = "[0-9A-Fa-f]{1,4}"
_IPV6 = "|".join(
    [
        f"({_HEX}:){{7}}{_HEX}",
        f"({_HEX}:){{1,7}}:",
        f"({_HEX}:){{1,6}}:{_HEX}",
        f"({_HEX}:){{1,5}}(:{_HEX}){{1,2}}",
        f"({_HEX}:){{1,4}}(:{_HEX}){{1,3}}",
        f"({_HEX}:){{1,3}}(:{_HEX}){{1,4}}",
        f"({_HEX}:){{1,2}}(:{_HEX}){{1,5}}",
        f"{_HEX}:(:{_HEX}){{1,6}}",
        f":((:{_HEX}){{1,7}}|:)",
    ]
)
_REG_NAME = "[A-Za-z0-9._~%!$&()*+,;=-]"  # RFC 3986 reg-name characters (no ' or @)
_PORT = "(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
API_URL_PATTERN = rf"^(?i:https?)://(\[({_IPV6})\]|{_REG_NAME}+)(:{_PORT}?)?([/?#][!-~]*)?$"
# http:// only to a loopback host (the agent's rule: localhost, *.localhost, 127/8,
# ::1 - the CRD accepts that one spelling), or with spec.apiAllowInsecureHttp.
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
API_URL_LOOPBACK_HTTP = (
    rf"^(?i:http)://((?i:({_REG_NAME}*\.)?localhost)|127(\.{_OCTET}){{3}}|\[::1\])"
    r"(:[0-9]*)?([/?#].*)?$"
)
CLEARTEXT_API_URL = (
    "spec.apiUrl: http:// sends the API key and every call in cleartext; use https://, "
    "an http:// URL to loopback (localhost, 127.0.0.1, [::1]), or set "
    "spec.apiAllowInsecureHttp: true for a trusted network"
)

DEFAULT_RESOURCES: Mapping[str, Mapping[str, str]] = {
    "requests": {"cpu": "50m", "memory": "128Mi"},
    "limits": {"memory": "512Mi"},
}


class SpecError(ValueError):
    """The spec is invalid; the message names the field (never a secret value)."""


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str

    def describe(self) -> str:
        return f"key {self.key!r} of Secret {self.name!r}"


@dataclass(frozen=True)
class DatabaseSpec:
    type: str
    host: str
    port: int
    name: str
    user: str
    password: SecretKeyRef | None = None
    ssl_mode: str = ""
    ca: SecretKeyRef | None = None
    timezone: str = "auto"
    table_cdr: str = "cdr"
    table_cel: str = "cel"
    table_recordings: str = ""


@dataclass(frozen=True)
class AmiSpec:
    host: str
    username: str
    password: SecretKeyRef
    port: int = 5038
    tls: bool = False


@dataclass(frozen=True)
class CelSpec:
    mode: str = "db"
    csv_path: str = ""
    csv_volume: Mapping[str, Any] | None = None
    ami: AmiSpec | None = None


@dataclass(frozen=True)
class ShippingSpec:
    mode: str = "complete"
    poll_interval_seconds: int = 2
    batch_size: int = 500
    long_call_update_interval_seconds: int = 600


@dataclass(frozen=True)
class RecordingsSpec:
    enabled: bool = False
    paths: tuple[str, ...] = ("/var/spool/asterisk/monitor",)
    upload: bool = False
    delete_after_upload: bool = False
    volume: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class DirectionSpec:
    ext_min_length: int = 2
    ext_max_length: int = 7
    intl_prefixes: tuple[str, ...] = ("011", "00")
    known_trunks: tuple[str, ...] = ()
    default_country_code: str = ""


@dataclass(frozen=True)
class TenantsSpec:
    did_map: tuple[tuple[str, str], ...] = ()  # sorted by DID
    account_code_map: tuple[tuple[str, str], ...] = ()  # sorted by accountcode


@dataclass(frozen=True)
class StateSpec:
    size: str = "1Gi"
    storage_class_name: str | None = None
    when_deleted: str = "Retain"  # the claim outlives the connector unless "Delete"

    @property
    def retained(self) -> bool:
        return self.when_deleted == "Retain"


@dataclass(frozen=True)
class DrainSpec:
    timeout_seconds: int = DEFAULT_DRAIN_TIMEOUT  # 0 = delete without waiting


@dataclass(frozen=True)
class ServiceMonitorSpec:
    enabled: bool = False
    interval: str = "30s"
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ConnectorSpec:
    """One AsteriskConnector, every default applied."""

    name: str
    namespace: str
    api_key: SecretKeyRef
    customer_id: int
    database: DatabaseSpec
    region: str = ""
    api_url: str = ""
    api_allow_insecure_http: bool = False  # API_ALLOW_INSECURE_HTTP
    tenant: str = ""
    hostname: str = ""
    cel: CelSpec = field(default_factory=CelSpec)
    shipping: ShippingSpec = field(default_factory=ShippingSpec)
    recordings: RecordingsSpec = field(default_factory=RecordingsSpec)
    direction: DirectionSpec = field(default_factory=DirectionSpec)
    tenants: TenantsSpec = field(default_factory=TenantsSpec)
    state: StateSpec = field(default_factory=StateSpec)
    drain: DrainSpec = field(default_factory=DrainSpec)
    image: str = ""
    resources: Mapping[str, Any] = field(default_factory=lambda: copy.deepcopy(DEFAULT_RESOURCES))
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Mapping[str, Any], ...] = ()
    affinity: Mapping[str, Any] | None = None
    pod_labels: tuple[tuple[str, str], ...] = ()
    pod_annotations: tuple[tuple[str, str], ...] = ()
    service_monitor: ServiceMonitorSpec = field(default_factory=ServiceMonitorSpec)
    paused: bool = False

    def secret_refs(self) -> list[SecretKeyRef]:
        """Every Secret key this connector needs, in a stable order."""
        refs = [self.api_key]
        if self.database.password is not None:
            refs.append(self.database.password)
        if self.database.ca is not None:
            refs.append(self.database.ca)
        if self.cel.mode == "ami" and self.cel.ami is not None:
            refs.append(self.cel.ami.password)
        return refs

    def secret_names(self) -> list[str]:
        return sorted({ref.name for ref in self.secret_refs()})


# --------------------------------------------------------------------------- parsing helpers


def _obj(value: Any, path: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{path} must be an object")
    return value


def _str(
    m: Mapping[str, Any], key: str, path: str, default: str = "", *, required: bool = False
) -> str:
    value = m.get(key)
    if value is None:
        if required:
            raise SpecError(f"{path}.{key} is required")
        return default
    if not isinstance(value, str):
        raise SpecError(f"{path}.{key} must be a string")
    if required and not value:
        raise SpecError(f"{path}.{key} must not be empty")
    return value


def _int(
    m: Mapping[str, Any],
    key: str,
    path: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    value = m.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{path}.{key} must be an integer")
    if minimum is not None and value < minimum:
        raise SpecError(f"{path}.{key} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise SpecError(f"{path}.{key} must be at most {maximum}")
    return value


def _bool(m: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
    value = m.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise SpecError(f"{path}.{key} must be true or false")
    return value


def _enum(m: Mapping[str, Any], key: str, path: str, allowed: Sequence[str], default: str) -> str:
    value = _str(m, key, path, default)
    if value and value not in allowed:
        raise SpecError(f"{path}.{key} must be one of {', '.join(allowed)} (got {value!r})")
    return value


def _str_list(m: Mapping[str, Any], key: str, path: str, default: Sequence[str]) -> tuple[str, ...]:
    value = m.get(key)
    if value is None:
        return tuple(default)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{path}.{key} must be a list of strings")
    return tuple(value)


def _str_map(m: Mapping[str, Any], key: str, path: str) -> tuple[tuple[str, str], ...]:
    value = m.get(key)
    if value is None:
        return ()
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise SpecError(f"{path}.{key} must map strings to strings")
    return tuple(sorted(value.items()))


def _secret_ref(
    m: Mapping[str, Any], key: str, path: str, default_key: str, *, required: bool = False
) -> SecretKeyRef | None:
    value = m.get(key)
    if value is None:
        if required:
            raise SpecError(f"{path}.{key} is required")
        return None
    ref = _obj(value, f"{path}.{key}")
    return SecretKeyRef(
        name=_str(ref, "name", f"{path}.{key}", required=True),
        key=_str(ref, "key", f"{path}.{key}", default_key) or default_key,
    )


def _volume(m: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any] | None:
    value = m.get(key)
    if value is None:
        return None
    source = _obj(value, f"{path}.{key}")
    if len(source) != 1:
        raise SpecError(
            f"{path}.{key} must hold exactly one volume source (nfs, persistentVolumeClaim, "
            f"hostPath, ...), got {sorted(source) or 'none'}"
        )
    if "name" in source:
        raise SpecError(f"{path}.{key} is a volume source: leave out 'name'")
    return copy.deepcopy(dict(source))


# --------------------------------------------------------------------------- the parser


def parse_spec(
    name: str, namespace: str, spec: Mapping[str, Any] | None, *, default_image: str = ""
) -> ConnectorSpec:
    """The CR's spec (as stored, or as written by a user) -> `ConnectorSpec`."""
    if not name or len(name) > MAX_NAME_LENGTH or not _NAME_RE.match(name):
        raise SpecError(
            f"metadata.name {name!r} must be a DNS-1035 label of at most {MAX_NAME_LENGTH} "
            "characters (the children <name>-agent-env, <name>-metrics, ... derive from it)"
        )
    s = _obj(spec, "spec")
    p = "spec"

    region = _enum(s, "region", p, REGIONS, "")
    api_url = _str(s, "apiUrl", p)
    if not region and not api_url:
        raise SpecError("set spec.region or spec.apiUrl")
    allow_http = _bool(s, "apiAllowInsecureHttp", p, False)
    if api_url and not re.match(API_URL_PATTERN, api_url):
        raise SpecError(
            "spec.apiUrl must be an http(s) URL with a host (no user or password, no "
            "whitespace, a port up to 65535)"
        )
    cleartext = bool(api_url) and re.match(r"^(?i:http)://", api_url) is not None
    if cleartext and not allow_http and not re.match(API_URL_LOOPBACK_HTTP, api_url):
        raise SpecError(CLEARTEXT_API_URL)
    api_key = _secret_ref(s, "apiKeySecretRef", p, "api-key", required=True)
    assert api_key is not None
    if "customerId" not in s:
        raise SpecError("spec.customerId is required")
    customer_id = _int(s, "customerId", p, 0, minimum=1)

    d = _obj(s.get("database"), "spec.database")
    if not d:
        raise SpecError("spec.database is required")
    dp = "spec.database"
    db_type = _enum(d, "type", dp, DB_TYPES, "")
    if not db_type:
        raise SpecError("spec.database.type is required")
    ssl_mode = _enum(d, "sslMode", dp, SSL_MODES, "")
    ca = _secret_ref(d, "caSecretRef", dp, "ca.crt")
    if ca is not None and ssl_mode and ssl_mode not in ("require", "verify-ca", "verify-full"):
        raise SpecError(
            "spec.database.caSecretRef is only used with sslMode require, verify-ca or verify-full"
        )
    tables = _obj(d.get("tables"), "spec.database.tables")
    tp = "spec.database.tables"
    database = DatabaseSpec(
        type=db_type,
        host=_str(d, "host", dp, required=True),
        port=_int(d, "port", dp, DB_DEFAULT_PORTS[db_type], minimum=1, maximum=65535),
        name=_str(d, "name", dp, required=True),
        user=_str(d, "user", dp, required=True),
        password=_secret_ref(d, "passwordSecretRef", dp, "password"),
        ssl_mode=ssl_mode,
        ca=ca,
        timezone=_str(d, "timezone", dp, "auto") or "auto",
        table_cdr=_str(tables, "cdr", tp, "cdr") or "cdr",
        table_cel=_str(tables, "cel", tp, "cel") or "cel",
        table_recordings=_str(tables, "recordings", tp, ""),
    )

    c = _obj(s.get("cel"), "spec.cel")
    cp = "spec.cel"
    mode = _enum(c, "mode", cp, CEL_MODES, "db") or "db"
    csv_path = _str(c, "csvPath", cp)
    csv_volume = _volume(c, "csvVolume", cp)
    ami: AmiSpec | None = None
    if c.get("ami") is not None:
        a = _obj(c.get("ami"), "spec.cel.ami")
        ap = "spec.cel.ami"
        password = _secret_ref(a, "passwordSecretRef", ap, "password", required=True)
        assert password is not None
        ami = AmiSpec(
            host=_str(a, "host", ap, required=True),
            username=_str(a, "username", ap, required=True),
            password=password,
            port=_int(a, "port", ap, 5038, minimum=1, maximum=65535),
            tls=_bool(a, "tls", ap, False),
        )
    if mode == "csv":
        if not csv_path:
            raise SpecError("spec.cel.csvPath is required when spec.cel.mode is csv")
        if not csv_path.startswith("/") or csv_path.endswith("/"):
            raise SpecError("spec.cel.csvPath must be an absolute file path")
        if csv_volume is None:
            raise SpecError("spec.cel.csvVolume is required when spec.cel.mode is csv")
    if mode == "ami" and ami is None:
        raise SpecError("spec.cel.ami is required when spec.cel.mode is ami")
    cel = CelSpec(mode=mode, csv_path=csv_path, csv_volume=csv_volume, ami=ami)

    sh = _obj(s.get("shipping"), "spec.shipping")
    shp = "spec.shipping"
    shipping = ShippingSpec(
        mode=_enum(sh, "mode", shp, SHIPPING_MODES, "complete") or "complete",
        poll_interval_seconds=_int(sh, "pollIntervalSeconds", shp, 2, minimum=1, maximum=3600),
        batch_size=_int(sh, "batchSize", shp, 500, minimum=1, maximum=10000),
        long_call_update_interval_seconds=_int(
            sh, "longCallUpdateIntervalSeconds", shp, 600, minimum=0, maximum=86400
        ),
    )

    r = _obj(s.get("recordings"), "spec.recordings")
    rp = "spec.recordings"
    recordings = RecordingsSpec(
        enabled=_bool(r, "enabled", rp, False),
        paths=_str_list(r, "paths", rp, RecordingsSpec.paths),
        upload=_bool(r, "upload", rp, False),
        delete_after_upload=_bool(r, "deleteAfterUpload", rp, False),
        volume=_volume(r, "volume", rp),
    )
    if not recordings.paths:
        raise SpecError("spec.recordings.paths must not be empty")
    first = recordings.paths[0]
    for path in recordings.paths:
        if not path.startswith("/"):
            raise SpecError(f"spec.recordings.paths entry {path!r} must be absolute")
        if path != first and not path.startswith(first + "/"):
            raise SpecError(
                f"spec.recordings.paths entry {path!r} must be {first!r} or below it "
                "(the volume is mounted at paths[0])"
            )
    if recordings.enabled and recordings.volume is None:
        raise SpecError("spec.recordings.volume is required when spec.recordings.enabled is true")
    if recordings.delete_after_upload and not recordings.upload:
        raise SpecError("spec.recordings.deleteAfterUpload needs spec.recordings.upload")
    if recordings.upload and not recordings.enabled:
        raise SpecError("spec.recordings.upload needs spec.recordings.enabled")

    dr = _obj(s.get("direction"), "spec.direction")
    drp = "spec.direction"
    direction = DirectionSpec(
        ext_min_length=_int(dr, "extMinLength", drp, 2, minimum=1, maximum=20),
        ext_max_length=_int(dr, "extMaxLength", drp, 7, minimum=1, maximum=20),
        intl_prefixes=_str_list(dr, "intlPrefixes", drp, DirectionSpec.intl_prefixes),
        known_trunks=_str_list(dr, "knownTrunks", drp, ()),
        default_country_code=_str(dr, "defaultCountryCode", drp),
    )
    if direction.ext_min_length > direction.ext_max_length:
        raise SpecError("spec.direction.extMinLength must not exceed spec.direction.extMaxLength")

    t = _obj(s.get("tenants"), "spec.tenants")
    tenants = TenantsSpec(
        did_map=_str_map(t, "didMap", "spec.tenants"),
        account_code_map=_str_map(t, "accountCodeMap", "spec.tenants"),
    )

    st = _obj(s.get("state"), "spec.state")
    size = st.get("size", "1Gi")
    if isinstance(size, bool) or not isinstance(size, str | int):
        raise SpecError("spec.state.size must be a quantity such as 1Gi")
    state = StateSpec(
        size=str(size),
        storage_class_name=_str(st, "storageClassName", "spec.state") or None,
        when_deleted=_enum(st, "whenDeleted", "spec.state", WHEN_DELETED, "Retain") or "Retain",
    )
    dn = _obj(s.get("drain"), "spec.drain")
    drain = DrainSpec(
        timeout_seconds=_int(
            dn, "timeoutSeconds", "spec.drain", DEFAULT_DRAIN_TIMEOUT, minimum=0, maximum=86400
        )
    )

    res = _obj(s.get("resources"), "spec.resources")
    resources: dict[str, Any] = (
        copy.deepcopy(dict(res))
        if res
        else copy.deepcopy({k: dict(v) for k, v in DEFAULT_RESOURCES.items()})
    )

    tolerations_raw = s.get("tolerations") or []
    if not isinstance(tolerations_raw, list) or not all(
        isinstance(x, Mapping) for x in tolerations_raw
    ):
        raise SpecError("spec.tolerations must be a list of objects")
    affinity = _obj(s.get("affinity"), "spec.affinity")

    mon = _obj(_obj(s.get("monitoring"), "spec.monitoring").get("serviceMonitor"), "x")
    smp = "spec.monitoring.serviceMonitor"
    service_monitor = ServiceMonitorSpec(
        enabled=_bool(mon, "enabled", smp, False),
        interval=_str(mon, "interval", smp, "30s") or "30s",
        labels=_str_map(mon, "labels", smp),
    )

    return ConnectorSpec(
        name=name,
        namespace=namespace,
        region=region,
        api_url=api_url,
        api_allow_insecure_http=allow_http,
        api_key=api_key,
        customer_id=customer_id,
        tenant=_str(s, "tenant", p),
        hostname=_str(s, "hostname", p) or name,
        database=database,
        cel=cel,
        shipping=shipping,
        recordings=recordings,
        direction=direction,
        tenants=tenants,
        state=state,
        drain=drain,
        image=_str(s, "image", p) or default_image,
        resources=resources,
        node_selector=_str_map(s, "nodeSelector", p),
        tolerations=tuple(copy.deepcopy(dict(x)) for x in tolerations_raw),
        affinity=copy.deepcopy(dict(affinity)) if affinity else None,
        pod_labels=_str_map(s, "podLabels", p),
        pod_annotations=_str_map(s, "podAnnotations", p),
        service_monitor=service_monitor,
        paused=_bool(s, "paused", p, False),
    )


def parse_resource(body: Mapping[str, Any], *, default_image: str = "") -> ConnectorSpec:
    """A whole AsteriskConnector object (metadata + spec) -> `ConnectorSpec`."""
    meta = _obj(body.get("metadata"), "metadata")
    name = meta.get("name")
    namespace = meta.get("namespace") or "default"
    if not isinstance(name, str):
        raise SpecError("metadata.name is required")
    return parse_spec(name, str(namespace), body.get("spec"), default_image=default_image)
