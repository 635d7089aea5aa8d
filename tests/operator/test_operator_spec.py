"""spec.py: defaults applied once, errors name the field."""

from __future__ import annotations

from typing import Any

import pytest
from sipstack_operator.spec import (
    ConnectorSpec,
    SecretKeyRef,
    SpecError,
    parse_resource,
    parse_spec,
)

BASE: dict[str, Any] = {
    "region": "us1",
    "apiKeySecretRef": {"name": "api"},
    "customerId": 7,
    "database": {"type": "mysql", "host": "db", "name": "cdr", "user": "ro"},
}


def test_defaults() -> None:
    spec = parse_spec("pbx", "ns", BASE)
    assert isinstance(spec, ConnectorSpec)
    assert spec.api_key == SecretKeyRef("api", "api-key")
    assert spec.database.port == 3306
    assert spec.database.timezone == "auto"
    assert (spec.database.table_cdr, spec.database.table_cel) == ("cdr", "cel")
    assert spec.cel.mode == "db"
    assert spec.shipping.mode == "complete"
    assert spec.shipping.poll_interval_seconds == 2
    assert spec.recordings.enabled is False
    assert spec.direction.intl_prefixes == ("011", "00")
    assert spec.state.size == "1Gi"
    assert spec.hostname == "pbx"
    assert spec.paused is False
    assert spec.secret_refs() == [SecretKeyRef("api", "api-key")]
    assert (
        parse_spec(
            "pbx", "ns", {**BASE, "database": {**BASE["database"], "type": "postgresql"}}
        ).database.port
        == 5432
    )


def test_spec_is_frozen_and_comparable() -> None:
    a = parse_spec("pbx", "ns", BASE)
    b = parse_spec("pbx", "ns", BASE)
    assert a == b
    with pytest.raises(AttributeError):
        a.paused = True  # type: ignore[misc]


def test_secret_refs_cover_every_credential() -> None:
    spec = parse_spec(
        "pbx",
        "ns",
        {
            **BASE,
            "database": {
                **BASE["database"],
                "passwordSecretRef": {"name": "db"},
                "sslMode": "verify-ca",
                "caSecretRef": {"name": "db"},
            },
            "cel": {
                "mode": "ami",
                "ami": {
                    "host": "pbx",
                    "username": "u",
                    "passwordSecretRef": {"name": "ami", "key": "s"},
                },
            },
        },
    )
    assert spec.secret_refs() == [
        SecretKeyRef("api", "api-key"),
        SecretKeyRef("db", "password"),
        SecretKeyRef("db", "ca.crt"),
        SecretKeyRef("ami", "s"),
    ]
    assert spec.secret_names() == ["ami", "api", "db"]


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"region": "eu9"}, "spec.region"),
        ({"customerId": "7"}, "spec.customerId"),
        ({"customerId": 0}, "spec.customerId"),
        ({"apiKeySecretRef": None}, "spec.apiKeySecretRef"),
        (
            {"database": {"type": "oracle", "host": "h", "name": "n", "user": "u"}},
            "spec.database.type",
        ),
        ({"database": {"type": "mysql", "name": "n", "user": "u"}}, "spec.database.host"),
        ({"shipping": {"batchSize": 0}}, "spec.shipping.batchSize"),
        ({"paused": "yes"}, "spec.paused"),
        ({"apiUrl": "ftp://x"}, "spec.apiUrl"),
        (
            {"cel": {"mode": "csv", "csvPath": "/a/", "csvVolume": {"emptyDir": {}}}},
            "spec.cel.csvPath",
        ),
        (
            {"recordings": {"enabled": True, "volume": {"nfs": {}, "hostPath": {}}}},
            "spec.recordings.volume",
        ),
    ],
)
def test_errors_name_the_field(patch: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        parse_spec("pbx", "ns", {**BASE, **patch})


@pytest.mark.parametrize("name", ["", "Pbx", "1pbx", "p" * 56, "pbx-"])
def test_bad_names(name: str) -> None:
    with pytest.raises(SpecError, match=r"metadata\.name"):
        parse_spec(name, "ns", BASE)


def test_parse_resource_defaults_the_namespace() -> None:
    spec = parse_resource({"metadata": {"name": "pbx"}, "spec": BASE})
    assert spec.namespace == "default"
