"""The CRD: a valid apiextensions.k8s.io/v1 object, a structural and fully
documented schema, the examples valid against it (jsonschema Draft 4), its
defaults equal to spec.py's, and its x-kubernetes-validations CEL rules
evaluated with cel-python (celpy) on the defaulted examples and on broken
variants.

What celpy cannot tell: the API server's CEL cost estimation and the
Kubernetes CEL library extensions (quantity(), url(), ...). The rules use
only standard CEL (has, size, matches, startsWith, all, in), which celpy
implements.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import pytest
from sipstack_operator.spec import parse_resource

from .operator_testlib import EXAMPLES, example_crs, load_docs, strip_for_draft4

# --------------------------------------------------------------------------- helpers


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it (defaults of defaults too)."""
    value = copy.deepcopy(value)
    if isinstance(value, dict):
        for prop, sub in (schema.get("properties") or {}).items():
            if prop not in value and "default" in sub:
                value[prop] = copy.deepcopy(sub["default"])
            if prop in value:
                value[prop] = apply_defaults(sub, value[prop])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                if key not in (schema.get("properties") or {}):
                    value[key] = apply_defaults(extra, value[key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        value = [apply_defaults(schema["items"], v) for v in value]
    return value


def rules(
    schema: dict[str, Any], path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    for rule in schema.get("x-kubernetes-validations") or []:
        yield path, rule
    for prop, sub in (schema.get("properties") or {}).items():
        yield from rules(sub, (*path, prop))


def evaluate(schema: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    """Messages of the CEL rules that fail on `obj` (rules on absent fields are skipped)."""
    env = celpy.Environment()
    failed: list[str] = []
    for path, rule in rules(schema):
        node: Any = obj
        for part in path:
            if not isinstance(node, dict) or part not in node:
                node = None
                break
            node = node[part]
        if node is None:
            continue
        program = env.program(env.compile(rule["rule"]))
        result = program.evaluate({"self": celpy.json_to_cel(node)})
        if not isinstance(result, celpy.celtypes.BoolType):
            raise AssertionError(f"rule {rule['rule']!r} gave {result!r}")
        if not bool(result):
            failed.append(rule["message"])
    return failed


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for prop, sub in (schema.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{prop}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


# --------------------------------------------------------------------------- the CRD object


@pytest.mark.parametrize("version", ["1.28", kubernetes_validate.latest_version()])
def test_crd_is_a_valid_object(crd: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(crd, version, strict=True)


def test_crd_names_and_version(crd: dict[str, Any]) -> None:
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "asteriskconnectors.sipstack.com"
    assert spec["group"] == "sipstack.com"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "AsteriskConnector"
    assert spec["names"]["plural"] == "asteriskconnectors"
    assert spec["names"]["shortNames"] == ["astconn"]
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == [
        "Region",
        "DB",
        "CEL",
        "Ready",
        "Reason",
        "Backlog",
        "Last-Shipped",
        "Dead-Letters",
        "Lag",
        "Agent",
        "Age",
    ]


def test_schema_is_structural_and_documented(crd_schema: dict[str, Any]) -> None:
    for path, node in walk(crd_schema):
        if path in ("", ".metadata"):
            continue
        assert (
            "type" in node
            or node.get("x-kubernetes-int-or-string")
            or node.get("x-kubernetes-preserve-unknown-fields")
        ), f"{path} has no type"
        if path.startswith((".spec", ".status")) and not path.endswith(("[]", "{}")):
            assert node.get("description"), f"{path} has no description"


def test_defaults_are_valid_for_their_schema(crd_schema: dict[str, Any]) -> None:
    for path, node in walk(crd_schema):
        if "default" in node:
            jsonschema.Draft4Validator(strip_for_draft4(node)).validate(node["default"]), path


def test_no_inline_credentials(crd_schema: dict[str, Any]) -> None:
    for path, _node in walk(crd_schema["properties"]["spec"]):
        leaf = path.rsplit(".", 1)[-1].lower()
        if any(word in leaf for word in ("password", "apikey", "secret", "token")):
            assert leaf.endswith("secretref"), f"{path} looks like an inline credential"


def test_enums(crd_schema: dict[str, Any]) -> None:
    spec = crd_schema["properties"]["spec"]["properties"]
    assert spec["region"]["enum"] == ["ca1", "us1", "us2", "dev"]
    assert spec["database"]["properties"]["type"]["enum"] == ["postgresql", "mysql"]
    assert spec["cel"]["properties"]["mode"]["enum"] == ["db", "csv", "ami"]
    assert spec["shipping"]["properties"]["mode"]["enum"] == ["complete", "progressive"]


# --------------------------------------------------------------------------- examples


@pytest.mark.parametrize("path", example_crs(), ids=lambda p: p.name)
def test_examples_match_the_schema(crd_schema: dict[str, Any], path: Any) -> None:
    validator = jsonschema.Draft4Validator(strip_for_draft4(crd_schema))
    for doc in load_docs(path):
        validator.validate(doc)
        defaulted = apply_defaults(crd_schema, doc)
        validator.validate(defaulted)
        assert evaluate(crd_schema, defaulted) == []


def test_the_draft4_schema_rejects_typos_and_bad_enums(crd_schema: dict[str, Any]) -> None:
    validator = jsonschema.Draft4Validator(strip_for_draft4(crd_schema))
    doc = load_docs(example_crs()[0])[0]
    typo = copy.deepcopy(doc)
    typo["spec"]["databse"] = {}
    assert not validator.is_valid(typo)
    inline = copy.deepcopy(doc)
    inline["spec"]["database"]["password"] = "hunter2"
    assert not validator.is_valid(inline)
    region = copy.deepcopy(doc)
    region["spec"]["region"] = "eu1"
    assert not validator.is_valid(region)


def test_crd_defaults_equal_spec_defaults(crd_schema: dict[str, Any]) -> None:
    minimal = {
        "apiVersion": "sipstack.com/v1alpha1",
        "kind": "AsteriskConnector",
        "metadata": {"name": "m", "namespace": "ns"},
        "spec": {
            "region": "us1",
            "apiKeySecretRef": {"name": "api"},
            "customerId": 1,
            "database": {
                "type": "postgresql",
                "host": "h",
                "name": "n",
                "user": "u",
                "passwordSecretRef": {"name": "db"},
                "caSecretRef": {"name": "db"},
                "sslMode": "verify-full",
            },
            "cel": {
                "mode": "ami",
                "ami": {"host": "pbx", "username": "u", "passwordSecretRef": {"name": "ami"}},
            },
        },
    }
    defaulted = apply_defaults(crd_schema, minimal)
    assert defaulted != minimal  # the CRD did fill something in
    assert parse_resource(defaulted) == parse_resource(minimal)


# --------------------------------------------------------------------------- CEL rules


def _valid(crd_schema: dict[str, Any]) -> dict[str, Any]:
    return apply_defaults(crd_schema, load_docs(EXAMPLES / "pbx-east.yaml")[0])


BROKEN: dict[str, tuple[Any, str]] = {
    "csv without csvPath": (
        lambda d: d["spec"].update(cel={"mode": "csv", "csvVolume": {"emptyDir": {}}}),
        "cel.csvPath is required when cel.mode is csv",
    ),
    "csv without csvVolume": (
        lambda d: d["spec"].update(cel={"mode": "csv", "csvPath": "/x/Master.csv"}),
        "cel.csvVolume is required when cel.mode is csv",
    ),
    "ami without ami": (
        lambda d: d["spec"].update(cel={"mode": "ami"}),
        "cel.ami is required when cel.mode is ami",
    ),
    "neither region nor apiUrl": (
        lambda d: d["spec"].pop("region"),
        "set spec.region or spec.apiUrl",
    ),
    "name too long": (
        lambda d: d["metadata"].update(name="p" * 56),
        "metadata.name must be a DNS-1035 label",
    ),
    "name starts with a digit": (
        lambda d: d["metadata"].update(name="1pbx"),
        "metadata.name must be a DNS-1035 label",
    ),
    "extension lengths": (
        lambda d: d["spec"]["direction"].update(extMinLength=8, extMaxLength=4),
        "direction.extMinLength must not exceed direction.extMaxLength",
    ),
    "delete without upload": (
        lambda d: d["spec"]["recordings"].update(upload=False, deleteAfterUpload=True),
        "recordings.deleteAfterUpload needs recordings.upload",
    ),
    "recordings without volume": (
        lambda d: d["spec"]["recordings"].pop("volume"),
        "recordings.volume is required when recordings.enabled is true",
    ),
    "recording path outside the mount": (
        lambda d: d["spec"]["recordings"].update(paths=["/rec", "/other"]),
        "every recordings.paths entry must be paths[0] or below it",
    ),
    "CA without TLS": (
        lambda d: d["spec"]["database"].update(sslMode="disable"),
        "database.caSecretRef is only used with sslMode",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_cel_rules_reject(crd_schema: dict[str, Any], case: str) -> None:
    mutate, message = BROKEN[case]
    doc = _valid(crd_schema)
    assert evaluate(crd_schema, doc) == []
    mutate(doc)
    doc = apply_defaults(crd_schema, doc)
    failed = evaluate(crd_schema, doc)
    assert len(failed) == 1 and failed[0].startswith(message), failed


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_spec_parser_agrees_with_the_cel_rules(crd_schema: dict[str, Any], case: str) -> None:
    """spec.py raises for what the CRD rejects (render -f on a file no server checked)."""
    from sipstack_operator.spec import SpecError

    mutate, _ = BROKEN[case]
    doc = _valid(crd_schema)
    mutate(doc)
    with pytest.raises(SpecError):
        parse_resource(doc)
