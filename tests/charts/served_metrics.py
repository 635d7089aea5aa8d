"""The series the real agent and the real operator serve on /metrics, scraped
over HTTP: what the chart's alerts and dashboard may use.

- the agent: `sipstack-agent run` (sipstack_agent.demo.AgentProcess) against
  an empty SQLite PBX, its API never called;
- the operator: `sipstack_operator.metrics.serve`, the server the operator's
  startup handler runs, with one connector observed as the reconciler does.

`series` maps every series name Prometheus stores (`<counter>_total`,
`<histogram>_bucket`...) to the label names seen on it (empty when the family
has no sample yet: a labelled family whose label sets appear later).
"""

from __future__ import annotations

import socket
import time
import urllib.request
from contextlib import closing
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def series(text: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for suffix in SUFFIXES.get(family.type, ("",)):
            out.setdefault(family.name + suffix, set())
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


def scrape(port: int, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as resp:
                return str(resp.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def agent_series(workdir: Path) -> dict[str, set[str]]:
    from sipstack_agent.demo import AgentProcess, agent_env
    from sipstack_agent.sim.writers import create_sqlite_pbx

    pbx = workdir / "pbx.db"
    create_sqlite_pbx(str(pbx))
    port = free_port()
    env = agent_env(
        api_url=f"http://127.0.0.1:{free_port()}/v1/calls",
        state_dir=str(workdir / "state"),
        db={"DB_TYPE": "sqlite", "DB_NAME": str(pbx)},
        extra={"MONITORING_PORT": str(port), "MONITORING_HOST": "127.0.0.1"},
    )
    agent = AgentProcess(env, workdir / "agent.log")
    agent.start()
    try:
        text = scrape(port)
    finally:
        assert agent.terminate(15) == 0, agent.log_tail()
    return series(text)


def operator_series() -> dict[str, set[str]]:
    from sipstack_operator.metrics import OperatorMetrics, serve, stop

    metrics = OperatorMetrics()
    metrics.connectors.observe(
        "telephony",
        "pbx-east",
        paused=False,
        conditions=[{"type": "Ready", "status": "True"}],
    )
    server = serve(metrics, 0, host="127.0.0.1")
    try:
        return series(scrape(server.server_port))
    finally:
        stop(server)
