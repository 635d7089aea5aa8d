"""The CRD's size limits hold at runtime: a connector at every bounded limit renders
children that fit every cap, kopf can annotate it, and the agent gets its maps whole.

The caps (Linux and Kubernetes):
- one environment string "NAME=value\\0" may not exceed MAX_ARG_STRLEN (32 pages,
  128 KiB): exec fails with E2BIG, the agent container never starts;
- a ConfigMap holds at most 1 MiB of data (keys + values), a Secret 1 MiB;
- metadata.annotations totals at most 256 KiB (kopf's diff-base is one);
- an object is stored as JSON of at most 1.5 MiB (etcd's request limit),
  managedFields included.

"At the limit" means every bounded string at its maxLength in the costliest
characters its pattern allows (a 4-byte UTF-8 character, which kopf's JSON
writes as a 12-byte escape pair), every bounded list and map at its maxItems /
maxProperties, and map keys at the length their CEL rule allows.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kopf
import pytest
from sipstack_agent.config import load_settings
from sipstack_operator.diffbase import diffbase_storage
from sipstack_operator.render import TENANT_MAP_DIR, render
from sipstack_operator.spec import parse_resource

from .operator_testlib import EXAMPLES, load_docs, strip_for_draft4
from .test_operator_crd import apply_defaults, evaluate

MAX_ARG_STRLEN = 32 * 4096
ENV_TOTAL_BUDGET = 512 * 1024  # a quarter of the usual ARG_MAX (2 MiB), shared with argv
CONFIG_MAP_LIMIT = 1024 * 1024
SECRET_LIMIT = 1024 * 1024
ANNOTATIONS_LIMIT = 256 * 1024
OBJECT_LIMIT = 1536 * 1024
WIDE = "\U0001f600"  # 4 bytes in UTF-8, 12 in kopf's JSON (\\ud83d\\ude00)
SECRETS = {
    ("pbx-limits", "api-key"): "sk_" + "a" * 32,
    ("pbx-limits", "db-password"): "pw",
}


def spec_schema(crd: dict[str, Any]) -> dict[str, Any]:
    version = next(v for v in crd["spec"]["versions"] if v["storage"])
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]


def node(schema: dict[str, Any], *path: str) -> dict[str, Any]:
    for part in path:
        schema = schema["items"] if part == "[]" else schema["properties"][part]
    return schema


def fill(schema: dict[str, Any], prefix: str = "", filler: str = WIDE) -> str:
    """The costliest string the schema allows: maxLength characters after `prefix`."""
    text = prefix + filler * (schema["maxLength"] - len(prefix))
    assert re.fullmatch(schema.get("pattern", ".*"), text), (schema, prefix)
    return text


def key_limit(schema: dict[str, Any]) -> int:
    (rule,) = schema["x-kubernetes-validations"]
    return int(re.search(r"size\(k\) <= (\d+)", rule["rule"])[1])


def worst_map(schema: dict[str, Any], key_char: str, value_char: str) -> dict[str, str]:
    count, klen = schema["maxProperties"], key_limit(schema)
    value = fill(schema["additionalProperties"], filler=value_char)
    return {f"{i:05d}".ljust(klen, key_char): value for i in range(count)}


def at_the_limit(crd: dict[str, Any]) -> dict[str, Any]:
    s = spec_schema(crd)
    direction, recordings = node(s, "direction"), node(s, "recordings")
    tenants = node(s, "tenants")
    spec = {
        # ASCII only (the agent's rule as the CRD writes it: percent-encode the rest).
        "apiUrl": fill(node(s, "apiUrl"), "https://h/", filler="~"),
        "apiKeySecretRef": {"name": "pbx-limits", "key": "api-key"},
        "customerId": 2**31 - 1,
        "tenant": fill(node(s, "tenant")),
        "hostname": fill(node(s, "hostname")),
        "database": {
            "type": "postgresql",
            "host": fill(node(s, "database", "host")),
            "name": fill(node(s, "database", "name")),
            "user": fill(node(s, "database", "user")),
            "timezone": fill(node(s, "database", "timezone")),
            "passwordSecretRef": {"name": "pbx-limits", "key": "db-password"},
            "tables": {"cdr": "c" * 128, "cel": "e" * 128, "recordings": "r" * 128},
        },
        "cel": {
            "mode": "csv",
            "csvPath": fill(node(s, "cel", "csvPath"), "/"),
            "csvVolume": {"hostPath": {"path": "/var/log/asterisk/cel-custom"}},
        },
        "recordings": {
            "enabled": True,
            "upload": True,
            "volume": {"hostPath": {"path": "/var/spool/asterisk/monitor"}},
            # The others must lie below paths[0] (the mount).
            "paths": ["/r"]
            + [
                fill(node(s, "recordings", "paths", "[]"), f"/r/{i:02d}/")
                for i in range(1, recordings["properties"]["paths"]["maxItems"])
            ],
        },
        "direction": {
            "intlPrefixes": ["9" * 6] * direction["properties"]["intlPrefixes"]["maxItems"],
            "knownTrunks": [
                fill(node(s, "direction", "knownTrunks", "[]"), f"{i:03d}")
                for i in range(direction["properties"]["knownTrunks"]["maxItems"])
            ],
            "defaultCountryCode": "123",
        },
        "tenants": {
            # Keys have no pattern: a control character is 6 bytes in every JSON.
            "didMap": worst_map(tenants["properties"]["didMap"], "\x01", WIDE),
            "accountCodeMap": worst_map(tenants["properties"]["accountCodeMap"], "\x01", WIDE),
        },
        "image": fill(node(s, "image")),
    }
    return {
        "apiVersion": "sipstack.com/v1alpha1",
        "kind": "AsteriskConnector",
        "metadata": {"name": "p" * 55, "namespace": "n" * 63, "uid": "u-1"},
        "spec": spec,
    }


@pytest.fixture(scope="module")
def limit_cr(crd: dict[str, Any]) -> dict[str, Any]:
    return at_the_limit(crd)


def go_json_size(value: Any) -> int:
    """Bytes of the API server's JSON (encoding/json: UTF-8, <, > and & escaped)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode()) + 5 * sum(text.count(c) for c in "<>&")


def fields_v1(value: Any) -> Any:
    """managedFields' fieldsV1 of a manager that set every field (lists are atomic)."""
    if isinstance(value, dict):
        return {f"f:{k}": fields_v1(v) for k, v in value.items()}
    return {}


def test_the_limit_connector_is_valid_and_one_more_is_not(
    crd: dict[str, Any], crd_schema: dict[str, Any], limit_cr: dict[str, Any]
):
    validator = jsonschema.Draft4Validator(strip_for_draft4(crd_schema))
    assert not [e.message for e in validator.iter_errors(limit_cr)]
    assert evaluate(crd_schema, apply_defaults(crd_schema, limit_cr)) == []
    tenants = spec_schema(crd)["properties"]["tenants"]["properties"]
    for field in ("didMap", "accountCodeMap"):
        more = copy.deepcopy(limit_cr)
        more["spec"]["tenants"][field]["one-more"] = "acme"
        assert list(validator.iter_errors(more)), f"{field}: maxProperties not enforced"
        longer = copy.deepcopy(limit_cr)
        longer["spec"]["tenants"][field] = {"k" * (key_limit(tenants[field]) + 1): "acme"}
        assert evaluate(crd_schema, apply_defaults(crd_schema, longer)), (
            f"{field}: the key length rule does not hold"
        )


def test_children_at_the_limit_fit_every_cap(limit_cr: dict[str, Any]):
    children = {c["kind"]: c for c in render(parse_resource(limit_cr), SECRETS)}
    env = {k: base64.b64decode(v).decode() for k, v in children["Secret"]["data"].items()}
    sizes = {k: len(f"{k}={v}".encode()) + 1 for k, v in env.items()}
    assert max(sizes.values()) < MAX_ARG_STRLEN, max(sizes.items(), key=lambda kv: kv[1])
    assert sum(sizes.values()) < ENV_TOTAL_BUDGET
    secret_bytes = sum(len(k) + len(v.encode()) for k, v in env.items())
    assert secret_bytes < SECRET_LIMIT
    files = children["ConfigMap"]["data"]
    assert sum(len(k) + len(v.encode()) for k, v in files.items()) < CONFIG_MAP_LIMIT
    # The maps are files, not variables.
    assert not {"DID_TENANT_MAP", "ACCOUNTCODE_TENANT_MAP"} & set(env)
    # Every child, and the connector itself with its managedFields, fits in etcd.
    for child in children.values():
        assert go_json_size(child) < OBJECT_LIMIT, child["kind"]
    stored = {
        **limit_cr,
        "metadata": {
            **limit_cr["metadata"],
            "managedFields": [
                {"manager": "helm", "operation": "Apply", "fieldsV1": fields_v1(limit_cr["spec"])}
            ],
        },
    }
    assert go_json_size(stored) < OBJECT_LIMIT


def kopf_annotations(storage: Any, cr: dict[str, Any]) -> dict[str, str]:
    body = kopf.Body(copy.deepcopy(cr))
    patch = kopf.Patch(body=body)
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    return dict(patch["metadata"]["annotations"])


def test_kopf_can_annotate_the_limit_connector(limit_cr: dict[str, Any]):
    ours = kopf_annotations(diffbase_storage(), limit_cr)
    size = sum(len(k) + len(v.encode()) for k, v in ours.items())
    assert size < 1024, ours
    # What kopf's own storage would write: far above the cap the API server enforces.
    stock = kopf.AnnotationsDiffBaseStorage(prefix="sipstack.com")
    assert sum(len(k) + len(v.encode()) for k, v in kopf_annotations(stock, limit_cr).items()) > (
        ANNOTATIONS_LIMIT
    )


def test_every_change_still_changes_the_stored_essence(limit_cr: dict[str, Any]):
    storage = diffbase_storage()
    base = storage.build(body=kopf.Body(copy.deepcopy(limit_cr)))
    changed = copy.deepcopy(limit_cr)
    first = next(iter(changed["spec"]["tenants"]["didMap"]))
    changed["spec"]["tenants"]["didMap"][first] = "globex"
    assert storage.build(body=kopf.Body(changed)) != base
    labelled = copy.deepcopy(limit_cr)
    labelled["metadata"]["labels"] = {"team": "voice"}
    assert storage.build(body=kopf.Body(labelled)) != base
    status_only = {**copy.deepcopy(limit_cr), "status": {"backlog": 3}}
    assert storage.build(body=kopf.Body(status_only)) == base


def materialize(
    children: list[dict[str, Any]], secrets: dict[tuple[str, str], str], root: Path
) -> dict[str, str]:
    """The agent container as the kubelet starts it: env from the env Secret (envFrom),
    ConfigMap, Secret and projected volumes written as files under `root`, paths
    moved there."""
    kinds = {c["kind"]: c for c in children}
    by_name = {c["metadata"]["name"]: c for c in children}
    env_secret = next(c for c in children if c["metadata"]["name"].endswith("-agent-env"))
    env = {k: base64.b64decode(v).decode() for k, v in env_secret["data"].items()}
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    moved: dict[str, str] = {}
    for mount in pod["containers"][0]["volumeMounts"]:
        volume, target = volumes[mount["name"]], root / mount["mountPath"].lstrip("/")
        if "configMap" in volume:
            files = kinds["ConfigMap"]["data"]
        elif "secret" in volume:
            name = volume["secret"]["secretName"]
            child = (by_name.get(name) or {}).get("data") or {}  # a Secret the operator renders
            files = {
                i["path"]: base64.b64decode(child[i["key"]]).decode()
                if i["key"] in child
                else secrets[(name, i["key"])]
                for i in volume["secret"]["items"]
            }
        elif "projected" in volume:  # the credentials: one source per referenced Secret
            files = {
                i["path"]: secrets[(src["secret"]["name"], i["key"])]
                for src in volume["projected"]["sources"]
                for i in src["secret"]["items"]
            }
        else:
            continue
        target.mkdir(parents=True)
        for file_name, text in files.items():
            (target / file_name).write_text(text, encoding="utf-8")
        moved[mount["mountPath"]] = str(target)
    for key, value in env.items():
        for mount_path, target_dir in moved.items():
            if value.startswith(mount_path + "/"):
                env[key] = target_dir + value[len(mount_path) :]
    env["STATE_DIR"] = str(root / "state")
    return env


def test_the_agent_gets_maps_at_the_limit_whole(crd: dict[str, Any], tmp_path: Path):
    """Real example connector + maps at their limits -> render -> the agent's load_settings."""
    (cr,) = load_docs(EXAMPLES / "pbx-east.yaml")
    tenants = spec_schema(crd)["properties"]["tenants"]["properties"]
    # Keys with the characters the old key:tenant format could not carry.
    did_map = worst_map(tenants["didMap"], ",", WIDE)
    code_map = {
        k.replace("0", ":", 1): v for k, v in worst_map(tenants["accountCodeMap"], '"', "t").items()
    }
    cr["spec"]["tenants"] = {"didMap": did_map, "accountCodeMap": code_map}
    secrets = {
        (d["metadata"]["name"], k): v
        for d in load_docs(EXAMPLES / "secrets.yaml")
        for k, v in (d.get("stringData") or {}).items()
    }
    children = render(parse_resource(cr), secrets, control_token="a-control-token-0123456789")
    env = materialize(children, secrets, tmp_path)
    assert not [v for v in env.values() if v.startswith(TENANT_MAP_DIR)]
    settings = load_settings(env)
    assert dict(settings.calls.tenants.did_map) == did_map
    assert dict(settings.calls.tenants.accountcode_map) == code_map
    assert len(settings.calls.tenants.did_map) == tenants["didMap"]["maxProperties"]
