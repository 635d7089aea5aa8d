"""Every variable `render` gives the agent is one the agent reads, and each CR
field lands in the agent setting it is meant for.

For every CR variant of the render tests (the golden files) plus one with every
agent field set to a non-default value: the container's environment is built as
the kubelet would (envFrom and env, secretKeyRef/configMapKeyRef resolved from
the rendered children and the example Secrets, Secret/ConfigMap volumes written
to a temporary root and the paths pointing into them rewritten), then fed to the
agent's own loader, `sipstack_agent.config.load_settings`. The TABLE says, per CR
field, which Settings attribute must hold what.
"""

from __future__ import annotations

import base64
import copy
import pathlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
import pytest
from sipstack_agent.config import Settings, load_settings, unknown_variables
from sipstack_agent.rules.api_urls import REGION_HOSTS
from sipstack_operator.cli import render_documents, secret_values

from .operator_testlib import EXAMPLES, load_docs, strip_for_draft4
from .test_operator_render import MINIMAL, VARIANTS

SECRET_DOCS = load_docs(EXAMPLES / "secrets.yaml")
EXAMPLE_SECRETS = secret_values(SECRET_DOCS)
CONTROL_TOKEN = "the-operators-control-token-0123456789"  # the operator generates one

# Every agent-relevant field set, none to its default.
EVERY_FIELD: dict[str, Any] = {
    **copy.deepcopy(MINIMAL),
    "metadata": {"name": "every-field", "namespace": "telephony"},
    "spec": {
        "region": "ca1",
        "apiUrl": "https://ingest.example.com/v1/mqs/connectors/asterisk/calls",
        "apiAllowInsecureHttp": True,
        "apiKeySecretRef": {"name": "sipstack-api", "key": "api-key"},
        "customerId": 987654321,
        "tenant": "acme",
        "hostname": "pbx-7.example.com",
        "database": {
            "type": "postgresql",
            "host": "pg.example.com",
            "port": 6432,
            "name": "cdrdb",
            "user": "reader",
            "passwordSecretRef": {"name": "pbx-east-db"},
            "sslMode": "verify-ca",
            "caSecretRef": {"name": "pbx-east-db", "key": "ca.crt"},
            "timezone": "Europe/Paris",
            "tables": {"cdr": "cdr_2024", "cel": "cel_2024", "recordings": "recs"},
        },
        "cel": {"mode": "db"},
        "shipping": {
            "mode": "progressive",
            "pollIntervalSeconds": 7,
            "batchSize": 250,
            "longCallUpdateIntervalSeconds": 0,
        },
        "recordings": {
            "enabled": True,
            "paths": ["/rec", "/rec/archive"],
            "upload": True,
            "deleteAfterUpload": True,
            "volume": {"persistentVolumeClaim": {"claimName": "recordings"}},
        },
        "direction": {
            "extMinLength": 3,
            "extMaxLength": 6,
            "intlPrefixes": [],
            "knownTrunks": ["PJSIP/telco", "SIP/backup"],
            "defaultCountryCode": "44",
        },
        "tenants": {
            "didMap": {"+441234567890": "acme", "+441234567891": "globex"},
            "accountCodeMap": {"7": "initech"},
        },
    },
}
CASES: dict[str, list[dict[str, Any]]] = {
    **{name: crs for name, (crs, _) in VARIANTS.items()},
    "every-field": [EVERY_FIELD],
}


# --------------------------------------------------------------------------- the kubelet's part


def _b64(text: str) -> str:
    return base64.b64decode(text).decode()


@dataclass
class Pod:
    """One rendered agent container, its environment resolved as the kubelet would."""

    cr: dict[str, Any]
    deployment: dict[str, Any]
    env: dict[str, str]
    root: pathlib.Path  # where the Secret/ConfigMap volumes were written

    @property
    def container(self) -> dict[str, Any]:
        return dict(self.deployment["spec"]["template"]["spec"]["containers"][0])


class Sources:
    """Secret and ConfigMap data by (namespace, name): rendered children first."""

    def __init__(self, children: list[dict[str, Any]]) -> None:
        self.children = children

    def data(self, kind: str, namespace: str, name: str) -> dict[str, str]:
        for c in self.children:
            meta = c["metadata"]
            if c["kind"] == kind and meta["name"] == name and meta["namespace"] == namespace:
                if kind == "Secret":
                    return {k: _b64(v) for k, v in (c.get("data") or {}).items()}
                return dict(c.get("data") or {})
        if kind == "Secret":
            found = {
                k: v for (ns, n, k), v in EXAMPLE_SECRETS.items() if (ns, n) == (namespace, name)
            }
            if found:
                return found
        raise AssertionError(
            f"{kind} {namespace}/{name} is referenced but neither rendered nor given"
        )


def _key_ref(sources: Sources, namespace: str, value_from: Mapping[str, Any]) -> str:
    for field, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
        if field in value_from:
            ref = value_from[field]
            return sources.data(kind, namespace, ref["name"])[ref["key"]]
    raise AssertionError(f"valueFrom not resolvable here: {dict(value_from)}")


def _write_volume(
    sources: Sources, namespace: str, vol: Mapping[str, Any], target: pathlib.Path
) -> None:
    """The files the kubelet writes for a secret or configMap volume (or projected source)."""
    for field, kind, keys in (
        ("secret", "Secret", ("secretName", "name")),
        ("configMap", "ConfigMap", ("name",)),
    ):
        if field not in vol:
            continue
        name = next(vol[field][k] for k in keys if k in vol[field])
        data = sources.data(kind, namespace, name)
        items = vol[field].get("items") or [{"key": k, "path": k} for k in data]
        for it in items:
            (target / it["path"]).parent.mkdir(parents=True, exist_ok=True)
            (target / it["path"]).write_text(data[it["key"]])


def pods_of(name: str, tmp_path: pathlib.Path) -> Iterator[Pod]:
    yield from pods(CASES[name], tmp_path, **(VARIANTS[name][1] if name in VARIANTS else {}))


def pods(crs: list[dict[str, Any]], tmp_path: pathlib.Path, **options: Any) -> Iterator[Pod]:
    children = render_documents(crs, SECRET_DOCS, control_token=CONTROL_TOKEN, **options)
    sources = Sources(children)
    for dep in (c for c in children if c["kind"] == "Deployment"):
        ns = dep["metadata"]["namespace"]
        cr = next(
            c
            for c in crs
            if c["metadata"]["name"] == dep["metadata"]["labels"]["app.kubernetes.io/instance"]
        )
        pod_spec = dep["spec"]["template"]["spec"]
        (container,) = pod_spec["containers"]
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "secretRef" in source:
                data = sources.data("Secret", ns, source["secretRef"]["name"])
            else:
                data = sources.data("ConfigMap", ns, source["configMapRef"]["name"])
            env.update({prefix + k: v for k, v in data.items()})
        for item in container.get("env") or []:
            if "valueFrom" in item:
                env[item["name"]] = _key_ref(sources, ns, item["valueFrom"])
            else:
                env[item["name"]] = item.get("value", "")
        root = tmp_path / dep["metadata"]["name"]
        volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
        for mount in container.get("volumeMounts") or []:
            vol = volumes[mount["name"]]
            # A projected volume is its sources written into one directory.
            for source in vol["projected"]["sources"] if "projected" in vol else [vol]:
                _write_volume(sources, ns, source, root / mount["mountPath"].lstrip("/"))
            if "projected" not in vol and not {"secret", "configMap"} & set(vol):
                continue
            for var, value in env.items():
                if value == mount["mountPath"] or value.startswith(mount["mountPath"] + "/"):
                    env[var] = str(root) + value
        yield Pod(cr, dep, env, root)


# --------------------------------------------------------------------------- the table

ABSENT = object()


def get(obj: Any, path: str, default: Any = ABSENT) -> Any:
    for part in path.split("."):
        if not isinstance(obj, Mapping) or part not in obj:
            return default
        obj = obj[part]
    return obj


def attr(settings: Settings, path: str) -> Any:
    value: Any = settings
    for part in path.split("."):
        value = getattr(value, part)
    return value


def secret_of(cr: Mapping[str, Any], ref: Mapping[str, Any] | None, default_key: str) -> str:
    if ref is None:
        return ""
    ns = cr["metadata"].get("namespace", "default")
    return EXAMPLE_SECRETS[(ns, ref["name"], ref.get("key") or default_key)]


@dataclass(frozen=True)
class FileHolding:
    """Equal to a path whose file holds `text` (a mounted Secret key)."""

    text: str

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and pathlib.Path(other).read_text() == self.text

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Row:
    field: str  # the CR field, dotted (spec.database.port)
    setting: str  # the Settings attribute, dotted (database.port)
    want: Callable[[Any, Mapping[str, Any]], Any]  # (CR value or default, CR) -> setting
    default: Callable[[Mapping[str, Any]], Any] | None = None  # CR value when left out
    when: Callable[[Mapping[str, Any]], bool] = lambda cr: True


def same(v: Any, cr: Mapping[str, Any]) -> Any:
    return v


def recordings_on(cr: Mapping[str, Any]) -> bool:
    return bool(get(cr, "spec.recordings.enabled", False))


def cel_mode(cr: Mapping[str, Any]) -> str:
    return str(get(cr, "spec.cel.mode", "db"))


def region(cr: Mapping[str, Any]) -> str:
    return str(get(cr, "spec.region", "us1"))


DB_PORTS = {"postgresql": 5432, "mysql": 3306}

TABLE: list[Row] = [
    Row("metadata", "identity.connector_id", lambda m, cr: f"{m['namespace']}/{m['name']}"),
    Row("spec.hostname", "identity.hostname", same, lambda cr: cr["metadata"]["name"]),
    Row("spec.customerId", "identity.customer_id", same),
    Row("spec.tenant", "identity.tenant", same, lambda cr: ""),
    Row("spec.tenant", "calls.tenants.tenant", same, lambda cr: ""),
    Row("spec.region", "api.region", same, lambda cr: "us1"),
    Row(
        "spec.apiUrl",
        "api.url",
        same,
        lambda cr: f"https://{REGION_HOSTS[region(cr)]}/v1/mqs/connectors/asterisk/calls",
    ),
    Row("spec.apiAllowInsecureHttp", "api.allow_insecure_http", same, lambda cr: False),
    Row("spec.apiKeySecretRef", "api.api_key", lambda r, cr: secret_of(cr, r, "api-key")),
    Row("spec.database.type", "database.type", same),
    Row("spec.database.host", "database.host", same),
    Row(
        "spec.database.port",
        "database.port",
        same,
        lambda cr: DB_PORTS[cr["spec"]["database"]["type"]],
    ),
    Row("spec.database.name", "database.name", same),
    Row("spec.database.user", "database.user", same),
    Row(
        "spec.database.passwordSecretRef",
        "database.password",
        lambda r, cr: secret_of(cr, r, "password"),
        lambda cr: None,
    ),
    Row("spec.database.sslMode", "database.sslmode", same, lambda cr: ""),
    Row(
        "spec.database.caSecretRef",
        "database.sslrootcert",
        lambda r, cr: FileHolding(secret_of(cr, r, "ca.crt")) if r else "",
        lambda cr: None,
    ),
    Row("spec.database.timezone", "database.timezone", same, lambda cr: "auto"),
    Row("spec.database.timezone", "calls.timezone", same, lambda cr: "auto"),
    Row("spec.database.tables.cdr", "database.table_cdr", same, lambda cr: "cdr"),
    Row("spec.database.tables.cel", "database.table_cel", same, lambda cr: "cel"),
    Row(
        "spec.database.tables.recordings",
        "database.table_recordings",
        lambda v, cr: v if recordings_on(cr) else "",
        lambda cr: "",
    ),
    Row("spec.cel.mode", "cel_mode", same, lambda cr: "db"),
    Row("spec.cel.csvPath", "csv.path", same, when=lambda cr: cel_mode(cr) == "csv"),
    Row("spec.cel.ami.host", "ami.host", same, when=lambda cr: cel_mode(cr) == "ami"),
    Row("spec.cel.ami.port", "ami.port", same, lambda cr: 5038, lambda cr: cel_mode(cr) == "ami"),
    Row("spec.cel.ami.username", "ami.username", same, when=lambda cr: cel_mode(cr) == "ami"),
    Row(
        "spec.cel.ami.passwordSecretRef",
        "ami.password",
        lambda r, cr: secret_of(cr, r, "password"),
        when=lambda cr: cel_mode(cr) == "ami",
    ),
    Row("spec.cel.ami.tls", "ami.tls", same, lambda cr: False, lambda cr: cel_mode(cr) == "ami"),
    Row("spec.shipping.mode", "calls.shipping_mode", same, lambda cr: "complete"),
    Row("spec.shipping.pollIntervalSeconds", "poll_interval", same, lambda cr: 2),
    Row("spec.shipping.batchSize", "batch_size", same, lambda cr: 500),
    Row(
        "spec.shipping.longCallUpdateIntervalSeconds",
        "calls.long_call_update_interval",
        same,
        lambda cr: 600,
    ),
    Row(
        "spec.recordings.paths",
        "recordings.paths",
        lambda v, cr: tuple(v) if recordings_on(cr) else (),
        lambda cr: ["/var/spool/asterisk/monitor"],
    ),
    Row("spec.recordings.enabled", "recordings.paths", lambda v, cr: () if not v else ABSENT),
    Row("spec.recordings.upload", "recordings.upload", same, lambda cr: False),
    Row(
        "spec.recordings.deleteAfterUpload",
        "recordings.delete_after_upload",
        same,
        lambda cr: False,
    ),
    Row("spec.direction.extMinLength", "calls.direction.ext_min_length", same, lambda cr: 2),
    Row("spec.direction.extMaxLength", "calls.direction.ext_max_length", same, lambda cr: 7),
    Row(
        "spec.direction.intlPrefixes",
        "calls.direction.intl_prefixes",
        lambda v, cr: tuple(p for p in v if p != "+"),  # "+" is always international
        lambda cr: ["011", "00"],
    ),
    Row(
        "spec.direction.knownTrunks",
        "calls.direction.known_trunks",
        lambda v, cr: tuple(v),
        lambda cr: [],
    ),
    Row(
        "spec.direction.defaultCountryCode",
        "calls.direction.default_country_code",
        same,
        lambda cr: "",
    ),
    Row(
        "spec.tenants.didMap",
        "calls.tenants.did_map",
        lambda v, cr: tuple(sorted(v.items())),
        lambda cr: {},
    ),
    Row(
        "spec.tenants.accountCodeMap",
        "calls.tenants.accountcode_map",
        lambda v, cr: tuple(sorted(v.items())),
        lambda cr: {},
    ),
]

# CR fields that shape the pod or the operator's own work, not an agent setting.
NOT_AGENT_SETTINGS = {
    "spec.image",
    "spec.resources",
    "spec.nodeSelector",
    "spec.tolerations",
    "spec.affinity",
    "spec.podLabels",
    "spec.podAnnotations",
    "spec.state",
    "spec.drain",
    "spec.monitoring",
    "spec.paused",
    "spec.cel.csvVolume",
    "spec.recordings.volume",
}


# --------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_rendered_environment_loads_and_every_field_lands(
    name: str, tmp_path: pathlib.Path
) -> None:
    found = list(pods_of(name, tmp_path))
    assert found, "no Deployment rendered"
    for pod in found:
        assert unknown_variables(pod.env) == [], "rendered variables the agent does not read"
        assert not {"API_KEY", "DB_PASSWORD", "AMI_PASSWORD"} & set(pod.env), "files only"
        settings = load_settings(pod.env)  # raises ConfigError naming the variable
        assert settings.warnings == ()
        checked = 0
        for row in TABLE:
            if not row.when(pod.cr):
                continue
            value = get(pod.cr, row.field)
            if value is ABSENT:
                if row.default is None:
                    continue
                value = row.default(pod.cr)
            want = row.want(value, pod.cr)
            if want is ABSENT:
                continue
            got = attr(settings, row.setting)
            assert got == want, f"{row.field}={value!r} -> Settings.{row.setting}"
            checked += 1
        assert checked >= 25
        container = pod.container
        state = next(m for m in container["volumeMounts"] if m["name"] == "state")
        assert settings.state_dir == state["mountPath"]
        (port,) = (p for p in container["ports"] if p["name"] == "metrics")
        assert settings.monitoring_port == port["containerPort"]
        assert settings.log_format == "json"


def test_the_every_field_case_sets_every_row() -> None:
    for row in TABLE:
        if row.when(EVERY_FIELD):
            assert get(EVERY_FIELD, row.field) is not ABSENT, row.field


def _leaves(schema: Mapping[str, Any], path: str) -> Iterator[str]:
    props = schema.get("properties")
    if not props:
        yield path
        return
    for key, sub in props.items():
        yield from _leaves(sub, f"{path}.{key}")


def test_every_crd_field_has_a_row_or_is_not_an_agent_setting(crd_schema: dict[str, Any]) -> None:
    covered = {row.field for row in TABLE} | NOT_AGENT_SETTINGS
    missing = [
        leaf
        for leaf in _leaves(crd_schema["properties"]["spec"], "spec")
        if not any(leaf == c or leaf.startswith(c + ".") for c in covered)
    ]
    assert missing == [], "add a row to TABLE (or to NOT_AGENT_SETTINGS) for these CRD fields"


def test_unknown_variables_names_what_the_agent_does_not_read() -> None:
    env = next(pods_of("minimal", pathlib.Path("/nonexistent"))).env
    assert unknown_variables({**env, "DB_HOTS": "db", "RECORDING_PATH": "/x"}) == [
        "DB_HOTS",
        "RECORDING_PATH",
    ]


# CRD limits are the agent's: what the CRD accepts loads, what the agent refuses the
# CRD refuses (a value the API server takes must not crash-loop the agent).
EDGES: list[tuple[str, Any, bool]] = [
    ("spec.direction.intlPrefixes", ["+"], True),
    ("spec.direction.intlPrefixes", ["999999", "0"], True),
    ("spec.direction.intlPrefixes", ["1234567"], False),
    ("spec.direction.intlPrefixes", ["+44"], False),
    ("spec.direction.defaultCountryCode", "999", True),
    ("spec.direction.defaultCountryCode", "", True),
    ("spec.direction.defaultCountryCode", "1234", False),
    ("spec.direction.extMinLength", 20, True),
    ("spec.shipping.pollIntervalSeconds", 3600, True),
    ("spec.shipping.batchSize", 10000, True),
    ("spec.shipping.longCallUpdateIntervalSeconds", 86400, True),
]


def _with(cr: Mapping[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(dict(cr))
    node = out
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    if path == "spec.direction.extMinLength":
        node["extMaxLength"] = value
    return out


@pytest.mark.parametrize(("path", "value", "accepted"), EDGES)
def test_crd_limits_are_the_agents(
    path: str, value: Any, accepted: bool, crd_schema: dict[str, Any], tmp_path: pathlib.Path
) -> None:
    cr = _with(MINIMAL, path, value)
    errors = list(jsonschema.Draft4Validator(strip_for_draft4(crd_schema)).iter_errors(cr))
    assert (not errors) == accepted, [e.message for e in errors]
    if accepted:
        (pod,) = pods([cr], tmp_path)
        load_settings(pod.env)
