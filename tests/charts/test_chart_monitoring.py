"""ServiceMonitors, PrometheusRule and the Grafana dashboard of the chart."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from .chartlib import CHART, CI_DIR, ROOT, Helm, by_kind

REQUIRED_ALERTS = {
    "SipstackAgentDown",
    "SipstackBacklogGrowing",
    "SipstackOldestUndeliveredTooOld",
    "SipstackDeadLetters",
    "SipstackDatabaseUnreachable",
    "SipstackApiKeyRejected",
    "SipstackTimezoneSuspect",
    "SipstackOperatorDown",
}
PROMQL_FUNCTIONS = {
    "sum",
    "max",
    "min",
    "count",
    "rate",
    "increase",
    "deriv",
    "histogram_quantile",
    "vector",
    "by",
    "and",
    "or",
    "on",
    "le",
    "up",
}


def agent_metric_names() -> set[str]:
    """Series names the agent exposes (counter families get _total, histograms _bucket...)."""
    from sipstack_agent.metrics import Metrics

    names: set[str] = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names |= {family.name + "_total", family.name + "_created"}
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_count", "_sum")}
        else:
            names.add(family.name)
    return names


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"by \([^)]*\)", "", expr)
    expr = re.sub(r"on\([^)]*\)", "", expr)
    words = set(re.findall(r"[a-z_][a-z0-9_]*", expr))
    return words - PROMQL_FUNCTIONS


def balanced(expr: str) -> bool:
    """Brackets of a PromQL expression pair up (no promtool here to parse it fully)."""
    stack: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    in_string = False
    for char in expr:
        if char == '"':
            in_string = not in_string
        elif in_string:
            continue
        elif char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack and not in_string


def single(helm: Helm, **kw: Any) -> list[dict[str, Any]]:
    return helm.render([CI_DIR / "single-pbx-values.yaml"], **kw)


def test_prometheus_rule_has_every_alert(helm: Helm):
    (rule,) = by_kind(single(helm), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == REQUIRED_ALERTS
    known = agent_metric_names() | {"kube_deployment_status_replicas_available", "absent"}
    for name, alert in alerts.items():
        assert alert["labels"]["severity"] in ("warning", "critical")
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
        assert balanced(alert["expr"]), f"{name}: unbalanced brackets in {alert['expr']}"
        unknown = metric_names(alert["expr"]) - known
        assert not unknown, f"{name} uses metrics the agent does not expose: {unknown}"
    assert "> 900" in alerts["SipstackOldestUndeliveredTooOld"]["expr"]
    assert "sipstack_api_auth_failed" in alerts["SipstackApiKeyRejected"]["expr"]
    assert "sipstack_timezone_suspect" in alerts["SipstackTimezoneSuspect"]["expr"]
    assert "database_connection_status" in alerts["SipstackDatabaseUnreachable"]["expr"]
    assert alerts["SipstackAgentDown"]["expr"].startswith('up{container="agent"')


def test_alert_labels_and_runbooks(helm: Helm, write_values: Callable[[Any], Path]):
    path = write_values(
        {
            "prometheusRule": {
                "alertLabels": {"team": "voice"},
                "runbookBaseUrl": "https://example.com/docs/monitoring.md",
            }
        }
    )
    (rule,) = by_kind(helm.render([path]), "PrometheusRule")
    for alert in [r for g in rule["spec"]["groups"] for r in g["rules"]]:
        assert alert["labels"]["team"] == "voice"
        anchor = alert["alert"].lower()
        assert alert["annotations"]["runbook_url"] == (
            f"https://example.com/docs/monitoring.md#{anchor}"
        )


def test_monitoring_guide_explains_every_alert():
    guide = (ROOT / "docs" / "monitoring.md").read_text()
    for alert in REQUIRED_ALERTS:
        assert f"### {alert}" in guide, f"docs/monitoring.md has no section for {alert}"


def test_dashboard_config_map(helm: Helm):
    objects = single(helm)
    (config_map,) = [
        o for o in by_kind(objects, "ConfigMap") if "dashboard" in o["metadata"]["name"]
    ]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = config_map["data"].values()
    dashboard = json.loads(text)
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    for needle in ("calls completed per second", "outbox depth", "latency", "dead letters"):
        assert needle in titles
    known = agent_metric_names()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert balanced(target["expr"]), f"{panel['title']}: {target['expr']}"
            unknown = metric_names(target["expr"].replace("$namespace", "").replace("$pbx", ""))
            assert not unknown - known, f"{panel['title']}: {unknown - known}"
            if panel["type"] == "timeseries":
                assert "namespace, service" in target["expr"], panel["title"]
    assert json.loads((CHART / "dashboards" / "sipstack-fleet.json").read_text()) == dashboard
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "namespace", "pbx"}


def test_fleet_service_monitor_selects_the_operators_agent_services(helm: Helm):
    render = pytest.importorskip("sipstack_operator.render")
    spec_mod = pytest.importorskip("sipstack_operator.spec")
    objects = single(helm)
    (connector,) = by_kind(objects, "AsteriskConnector")
    fleet = [
        o for o in by_kind(objects, "ServiceMonitor") if o["metadata"]["name"].endswith("-agents")
    ]
    assert len(fleet) == 1
    selector = fleet[0]["spec"]["selector"]["matchLabels"]
    endpoint = fleet[0]["spec"]["endpoints"][0]
    connector["metadata"]["namespace"] = "pbx"
    spec = spec_mod.parse_resource(connector)
    secrets = {
        ("pbx-east-credentials", "api-key"): "sk_test",
        ("pbx-east-credentials", "db-password"): "pw",
    }
    children = render.render(spec, secrets, service_monitor_available=True)
    (service,) = by_kind(children, "Service")
    assert service["metadata"]["name"] == "pbx-east-metrics"
    assert selector.items() <= service["metadata"]["labels"].items()
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    (deployment,) = by_kind(children, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    # The alert selector container="agent" is the agent's container name.
    assert container["name"] == "agent"
    assert fleet[0]["spec"]["namespaceSelector"] == {"any": True}
    # perConnector mode: the operator's own ServiceMonitor scrapes the same endpoint.
    connector["spec"]["monitoring"] = {"serviceMonitor": {"enabled": True}}
    children = render.render(spec_mod.parse_resource(connector), secrets)
    (own,) = by_kind(children, "ServiceMonitor")
    assert own["spec"]["endpoints"][0]["port"] == endpoint["port"]
    assert own["spec"]["endpoints"][0]["path"] == endpoint["path"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert own["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert "jobLabel" not in own["spec"] and "jobLabel" not in fleet[0]["spec"]


def test_fleet_mode_and_per_connector_service_monitors_exclude_each_other(
    helm: Helm, write_values: Callable[[Any], Path]
):
    values = {
        "connectors": [
            {
                "name": "pbx-east",
                "region": "us1",
                "customerId": 1,
                "existingSecret": "creds",
                "database": {"type": "mysql", "host": "db", "name": "cdr", "user": "u"},
                "monitoring": {"serviceMonitor": {"enabled": True}},
            }
        ]
    }
    result = helm.run(*helm.template_args([write_values(values)], monitoring=True))
    assert result.returncode != 0
    assert "scraped twice" in result.output


def test_per_connector_mode_delegates_to_the_operator(
    helm: Helm, write_values: Callable[[Any], Path]
):
    path = write_values({"serviceMonitor": {"agents": {"mode": "perConnector"}, "interval": "15s"}})
    objects = helm.render([CI_DIR / "single-pbx-values.yaml", path])
    names = [o["metadata"]["name"] for o in by_kind(objects, "ServiceMonitor")]
    assert not [n for n in names if n.endswith("-agents")]
    without_api = helm.render([CI_DIR / "single-pbx-values.yaml", path], monitoring=False)
    (connector,) = by_kind(without_api, "AsteriskConnector")
    assert "monitoring" not in connector["spec"]
    (connector,) = by_kind(objects, "AsteriskConnector")
    assert connector["spec"]["monitoring"] == {
        "serviceMonitor": {
            "enabled": True,
            "interval": "15s",
            "labels": {"release": "kube-prometheus-stack"},
        }
    }


def test_operator_service_monitor_is_opt_in(helm: Helm, write_values: Callable[[Any], Path]):
    names = [o["metadata"]["name"] for o in by_kind(single(helm), "ServiceMonitor")]
    assert not [n for n in names if n.endswith("-operator")]
    path = write_values({"serviceMonitor": {"operator": {"enabled": True}}})
    objects = helm.render([CI_DIR / "single-pbx-values.yaml", path])
    (service,) = by_kind(objects, "Service")
    (sm,) = [
        o for o in by_kind(objects, "ServiceMonitor") if o["metadata"]["name"].endswith("-operator")
    ]
    assert sm["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"} in (
        service["spec"]["ports"]
    )
    (deployment,) = by_kind(objects, "Deployment")
    ports = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in ports
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_operator_down_alert_watches_the_operator_deployment(helm: Helm):
    objects = single(helm)
    (deployment,) = by_kind(objects, "Deployment")
    (rule,) = by_kind(objects, "PrometheusRule")
    (alert,) = [
        r
        for g in rule["spec"]["groups"]
        for r in g["rules"]
        if r["alert"] == "SipstackOperatorDown"
    ]
    assert f'deployment="{deployment["metadata"]["name"]}"' in alert["expr"]


def test_watch_namespaces_become_the_fleet_namespace_selector(helm: Helm):
    objects = helm.render([CI_DIR / "fleet-50-values.yaml"])
    (fleet,) = [
        o for o in by_kind(objects, "ServiceMonitor") if o["metadata"]["name"].endswith("-agents")
    ]
    assert fleet["spec"]["namespaceSelector"] == {"matchNames": ["pbx-fleet"]}
    assert fleet["spec"]["endpoints"][0]["interval"] == "60s"


# monitoring.coreos.com/v1 schemas generated from the pydantic models of
# cloudcoil-models-prometheus-operator 0.80.1.0 (see their $comment), closed with
# additionalProperties: false, so an unknown or misspelt field fails. To
# regenerate: pip install --target /tmp/cc --no-deps cloudcoil==0.6.0
# cloudcoil-models-prometheus-operator==0.80.1.0, then with PYTHONPATH=/tmp/cc:
#   schema = v1.<Kind>.model_json_schema(by_alias=True), add additionalProperties:
#   false to every object with properties. (cloudcoil itself is not installed in
#   the venv: its pytest plugin breaks pytest without filelock.)
DATA = Path(__file__).parent / "data"
UPSTREAM = {
    kind: json.loads((DATA / f"{kind.lower()}.v1.schema.json").read_text())
    for kind in ("ServiceMonitor", "PrometheusRule")
}


@pytest.mark.parametrize("values", ["single-pbx-values.yaml", "fleet-50-values.yaml"])
def test_monitoring_objects_match_the_upstream_schema(
    helm: Helm, write_values: Callable[[Any], Path], values: str
):
    extra = write_values({"serviceMonitor": {"operator": {"enabled": True}}})
    objects = helm.render([CI_DIR / values, extra])
    checked = 0
    for obj in by_kind(objects, "ServiceMonitor") + by_kind(objects, "PrometheusRule"):
        assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        validator = jsonschema.Draft202012Validator(UPSTREAM[obj["kind"]])
        errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(obj)]
        assert not errors, f"{obj['kind']}/{obj['metadata']['name']}: {errors}"
        checked += 1
    assert checked == 3


def test_upstream_schemas_are_closed():
    """A misspelt key fails against the generated schemas (they are strict)."""
    bad = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "endpoints": [{"port": "metrics", "intervall": "30s"}]},
    }
    validator = jsonschema.Draft202012Validator(UPSTREAM["ServiceMonitor"])
    assert any("intervall" in e.message for e in validator.iter_errors(bad))
