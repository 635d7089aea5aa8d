"""values.schema.json covers every value and rejects bad ones with readable errors."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from .chartlib import CHART, CI_DIR, CI_VALUES, Helm

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())

GOOD_CONNECTOR: dict[str, Any] = {
    "name": "pbx-east",
    "region": "us1",
    "customerId": 1234,
    "existingSecret": "pbx-east-credentials",
    "database": {"type": "mysql", "host": "db.example", "name": "asteriskcdrdb", "user": "cdr"},
}


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = SCHEMA["definitions"][node["$ref"].rsplit("/", 1)[1]]
    return node


def walk(value: Any, node: dict[str, Any], path: str) -> Iterator[str]:
    """Paths of values.yaml that the schema does not describe."""
    node = resolve(node)
    if isinstance(value, dict):
        props = node.get("properties", {})
        for key, sub in value.items():
            if key in props:
                yield from walk(sub, props[key], f"{path}.{key}")
            elif not isinstance(node.get("additionalProperties"), dict):
                yield f"{path}.{key}"


def test_schema_is_valid_draft7():
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    assert SCHEMA["additionalProperties"] is False


def test_schema_covers_every_value():
    assert set(VALUES) == set(SCHEMA["properties"]) - {"global"}
    assert list(walk(VALUES, SCHEMA, "")) == []
    jsonschema.Draft7Validator(SCHEMA).validate(VALUES)


@pytest.mark.parametrize("values", CI_VALUES)
def test_ci_values_are_valid(values: str):
    merged = copy.deepcopy(VALUES)
    merged.update(yaml.safe_load((CI_DIR / values).read_text()))
    jsonschema.Draft7Validator(SCHEMA).validate(merged)


def test_connector_keys_are_the_crd_spec_fields(crd: dict[str, Any]):
    version = next(v for v in crd["spec"]["versions"] if v["storage"])
    spec_fields = set(version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"])
    chart_only = {"name", "namespace", "labels", "annotations", "existingSecret", "createSecret"}
    connector = SCHEMA["definitions"]["connector"]
    assert set(connector["properties"]) == spec_fields | chart_only
    assert connector["additionalProperties"] is False


BAD_VALUES: list[tuple[str, Callable[[dict[str, Any]], None], list[str]]] = [
    (
        "wrong-region",
        lambda c: c.update(region="eu9"),
        ["/connectors/0/region", "'ca1', 'us1', 'us2', 'dev'"],
    ),
    (
        "missing-database-host",
        lambda c: c["database"].pop("host"),
        ["/connectors/0/database", "missing property 'host'"],
    ),
    (
        "inline-database-password",
        lambda c: c["database"].update(password="hunter2"),
        ["/connectors/0/database", "additional properties 'password' not allowed"],
    ),
    (
        "inline-api-key",
        lambda c: c.update(apiKey="sk_live_123"),
        ["/connectors/0", "additional properties 'apiKey' not allowed"],
    ),
    (
        "inline-ami-password",
        lambda c: c.update(
            cel={"mode": "ami", "ami": {"host": "pbx", "username": "u", "password": "p"}}
        ),
        ["/connectors/0/cel/ami", "additional properties 'password' not allowed"],
    ),
    (
        "bad-database-type",
        lambda c: c["database"].update(type="oracle"),
        ["/connectors/0/database/type", "'postgresql', 'mysql'"],
    ),
    (
        "name-too-long",
        lambda c: c.update(name="p" * 56),
        ["/connectors/0/name", "maxLength: got 56, want 55"],
    ),
]


@pytest.mark.parametrize(
    ("mutate", "messages"), [(m, e) for _, m, e in BAD_VALUES], ids=[n for n, _, _ in BAD_VALUES]
)
def test_bad_connector_is_rejected_readably(
    helm: Helm,
    write_values: Callable[[Any], Path],
    mutate: Callable[[dict[str, Any]], None],
    messages: list[str],
):
    connector = copy.deepcopy(GOOD_CONNECTOR)
    mutate(connector)
    path = write_values({"connectors": [connector]})
    for command in (
        ["lint", "--strict", str(CHART), "-f", str(path)],
        helm.template_args([path], monitoring=True),
    ):
        result = helm.run(*command)
        assert result.returncode != 0, command
        assert "values don't meet the specifications of the schema" in result.output
        for message in messages:
            assert message in result.output, result.output


def test_good_connector_renders(helm: Helm, write_values: Callable[[Any], Path]):
    path = write_values({"connectors": [GOOD_CONNECTOR]})
    result = helm.run(*helm.template_args([path], monitoring=True))
    assert result.returncode == 0, result.output


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"operator": {"watchNamespaces": ["Bad_NS"]}}, "/operator/watchNamespaces/0"),
        ({"serviceMonitor": {"agents": {"mode": "both"}}}, "/serviceMonitor/agents/mode"),
        ({"serviceMonitor": {"interval": "soon"}}, "/serviceMonitor/interval"),
        ({"unknownKey": 1}, "additional properties 'unknownKey' not allowed"),
        ({"operator": {"image": {"digest": "latest"}}}, "/operator/image/digest"),
    ],
)
def test_bad_chart_values_are_rejected(
    helm: Helm, write_values: Callable[[Any], Path], values: dict[str, Any], message: str
):
    result = helm.run(*helm.template_args([write_values(values)], monitoring=False))
    assert result.returncode != 0
    assert message in result.output, result.output


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"region": None}, "set region (ca1, us1, us2, dev) or apiUrl"),
        ({"customerId": None}, "customerId is required"),
        ({"existingSecret": None}, "set existingSecret, createSecret or apiKeySecretRef"),
        (
            {"createSecret": {"apiKey": "k"}},
            "use existingSecret or createSecret, not both",
        ),
    ],
)
def test_fleet_rules_fail_with_the_connector_named(
    helm: Helm, write_values: Callable[[Any], Path], change: dict[str, Any], message: str
):
    connector = copy.deepcopy(GOOD_CONNECTOR)
    for key, value in change.items():
        if value is None:
            connector.pop(key)
        else:
            connector[key] = value
    result = helm.run(
        *helm.template_args([write_values({"connectors": [connector]})], monitoring=False)
    )
    assert result.returncode != 0
    assert "connectors[0] (pbx-east)" in result.output
    assert message in result.output, result.output


def test_duplicate_connector_names_fail(helm: Helm, write_values: Callable[[Any], Path]):
    path = write_values({"connectors": [GOOD_CONNECTOR, GOOD_CONNECTOR]})
    result = helm.run(*helm.template_args([path], monitoring=False))
    assert result.returncode != 0
    assert "appears twice" in result.output


def test_connector_outside_the_watched_namespaces_fails(
    helm: Helm, write_values: Callable[[Any], Path]
):
    values = {
        "operator": {"watchNamespaces": ["telephony"]},
        "connectors": [dict(GOOD_CONNECTOR, namespace="elsewhere")],
    }
    result = helm.run(*helm.template_args([write_values(values)], monitoring=False))
    assert result.returncode != 0
    assert "namespace elsewhere is not in operator.watchNamespaces [telephony]" in result.output


def test_inline_password_in_connector_defaults_is_rejected(
    helm: Helm, write_values: Callable[[Any], Path]
):
    values = {"connectorDefaults": {"database": {"password": "hunter2"}}}
    result = helm.run(*helm.template_args([write_values(values)], monitoring=False))
    assert result.returncode != 0
    assert "/connectorDefaults/database" in result.output
    assert "additional properties 'password' not allowed" in result.output
