"""The install's allow-list (`operator.allow.*`) reaches the operator's environment,
rendered by the real helm and read by the operator's own parser (OperatorConfig)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sipstack_operator.config import OperatorConfig

from .chartlib import CI_DIR, Helm, by_kind
from .test_chart_schema import GOOD_CONNECTOR

SINGLE = CI_DIR / "single-pbx-values.yaml"


def operator_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    (deployment,) = by_kind(objects, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_insecure_http_is_off_by_default(helm: Helm):
    env = operator_env(helm.render([SINGLE]))
    assert env["SIPSTACK_ALLOW_INSECURE_HTTP"] == "false"
    assert OperatorConfig.from_env(env).allow.insecure_http is False


def test_insecure_http_can_be_allowed(helm: Helm, write_values: Callable[[Any], Path]):
    values = write_values({"operator": {"allow": {"insecureHttp": True}}})
    env = operator_env(helm.render([SINGLE, values]))
    assert env["SIPSTACK_ALLOW_INSECURE_HTTP"] == "true"
    allow = OperatorConfig.from_env(env).allow
    assert allow.insecure_http is True
    # The rest of the allow-list keeps its defaults.
    assert allow.secret_label == ("sipstack.com/connector-secret", "true")


@pytest.mark.parametrize("value", ["yes", 1])
def test_insecure_http_must_be_a_boolean(
    helm: Helm, write_values: Callable[[Any], Path], value: Any
):
    values = write_values({"operator": {"allow": {"insecureHttp": value}}})
    result = helm.run(*helm.template_args([SINGLE, values], monitoring=False))
    assert result.returncode != 0
    assert "insecureHttp" in result.output, result.output


def test_a_chart_connector_asking_for_insecure_http_needs_the_install(
    helm: Helm, write_values: Callable[[Any], Path]
):
    """The operator would refuse it (NotAllowed): the chart says so at install time."""
    connector = {
        **GOOD_CONNECTOR,
        "apiUrl": "http://collector.internal/v1/calls",
        "apiAllowInsecureHttp": True,
    }
    refused = write_values({"connectors": [connector]})
    result = helm.run(*helm.template_args([refused], monitoring=False))
    assert result.returncode != 0
    assert "connectors[0] (pbx-east): apiAllowInsecureHttp is true" in result.output
    allowed = write_values(
        {
            "connectors": [connector],
            "operator": {"allow": {"insecureHttp": True, "apiHosts": ["collector.internal"]}},
        }
    )
    (cr,) = by_kind(helm.render([allowed], monitoring=False), "AsteriskConnector")
    assert cr["spec"]["apiAllowInsecureHttp"] is True
