"""Prometheus metrics of the operator, one registry per operator run.

Served by `serve` (a daemon thread of prometheus_client) on
SIPSTACK_METRICS_PORT (default 9090, 0 = off) at /metrics; the chart's
operator Service and ServiceMonitor scrape it (port name ``metrics``).

- ``sipstack_operator_build_info{version,python}``: always 1.
- ``sipstack_operator_reconciles_total{result}``: result ``success`` or ``failure``.
- ``sipstack_operator_reconcile_failures_total{reason}``: one of FAILURE_REASONS.
- ``sipstack_operator_reconcile_duration_seconds``: histogram of one reconcile.
- ``sipstack_operator_connectors{condition,status}``: connectors by the status
  (True/False/Unknown) of each condition type; every set exists, at 0 too.
- ``sipstack_operator_connector_info{connector_namespace,connector,connector_service,paused}``:
  1 per connector this operator handles; ``connector_service`` is its agent's
  Service (``<name>-metrics``), so an alert can join the agents' ``up`` series
  on (namespace, service) and fire for a connector whose agent has no target
  at all. (Prometheus puts its own ``namespace`` and ``service`` labels of the
  operator's target on every series, hence the prefixed names.)

Connector series come from what the reconciler last wrote into each
connector's status (`ConnectorTracker.observe`), read at scrape time.
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sipstack_operator import __version__
from sipstack_operator.render import Names
from sipstack_operator.status import CONDITION_TYPES, FALSE, TRUE, UNKNOWN

FAILURE_REASONS = (
    "invalid_spec",
    "not_allowed",
    "secrets_unresolved",
    "apply_failed",
    "api_error",
    "error",
)
CONDITION_STATUSES = (TRUE, FALSE, UNKNOWN)
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class ConnectorState:
    paused: bool
    conditions: Mapping[str, str]  # condition type -> status


class ConnectorTracker(Collector):
    """The last written status of every connector, as gauges at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[tuple[str, str], ConnectorState] = {}

    def observe(
        self,
        namespace: str,
        name: str,
        *,
        paused: bool,
        conditions: Sequence[Mapping[str, object]],
    ) -> None:
        statuses = {
            str(c.get("type")): str(c.get("status") or UNKNOWN) for c in conditions if c.get("type")
        }
        with self._lock:
            self._states[(namespace, name)] = ConnectorState(paused, statuses)

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._states.pop((namespace, name), None)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            states = dict(self._states)
        by_condition = GaugeMetricFamily(
            "sipstack_operator_connectors",
            "AsteriskConnectors by the status of each condition",
            labels=["condition", "status"],
        )
        for kind in CONDITION_TYPES:
            for status in CONDITION_STATUSES:
                count = sum(1 for s in states.values() if s.conditions.get(kind, UNKNOWN) == status)
                by_condition.add_metric([kind, status], count)
        yield by_condition
        info = GaugeMetricFamily(
            "sipstack_operator_connector_info",
            "1 per AsteriskConnector handled by this operator (paused: no agent pod expected)",
            labels=["connector_namespace", "connector", "connector_service", "paused"],
        )
        for (namespace, name), state in sorted(states.items()):
            paused = "true" if state.paused else "false"
            info.add_metric([namespace, name, Names.of(name).service, paused], 1)
        yield info


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=r)
        self.build_info = Gauge(
            "sipstack_operator_build_info",
            "Always 1; the operator's version and Python version as labels",
            ["version", "python"],
            registry=r,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.reconciles = Counter(
            "sipstack_operator_reconciles",
            "Reconciles of an AsteriskConnector (apply of its children), by result",
            ["result"],
            registry=r,
        )
        self.reconcile_failures = Counter(
            "sipstack_operator_reconcile_failures",
            "Reconciles that failed, by reason",
            ["reason"],
            registry=r,
        )
        self.reconcile_duration = Histogram(
            "sipstack_operator_reconcile_duration_seconds",
            "Duration of one reconcile",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        for result in ("success", "failure"):
            self.reconciles.labels(result)
        for reason in FAILURE_REASONS:
            self.reconcile_failures.labels(reason)
        self.connectors = ConnectorTracker()
        r.register(self.connectors)

    def reconciled(self, seconds: float, failure: str | None = None) -> None:
        """Count one reconcile; `failure` is one of FAILURE_REASONS, None for success."""
        self.reconcile_duration.observe(seconds)
        if failure is None:
            self.reconciles.labels("success").inc()
            return
        self.reconciles.labels("failure").inc()
        self.reconcile_failures.labels(failure if failure in FAILURE_REASONS else "error").inc()


def serve(metrics: OperatorMetrics, port: int, host: str = "0.0.0.0") -> WSGIServer:  # noqa: S104
    """Serve /metrics in a daemon thread; `.server_port` is the bound port, `.shutdown()` stops."""
    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return server


def stop(server: WSGIServer) -> None:
    server.shutdown()
    server.server_close()
