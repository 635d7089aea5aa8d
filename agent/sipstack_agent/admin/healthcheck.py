"""`sipstack-agent healthcheck`: the container's health check, GET /healthz where
MONITORING_HOST/PORT say (admin.agentclient). Exit code 0 healthy, 1 unhealthy."""

from __future__ import annotations

from typing import TextIO

from .agentclient import AgentUnavailable, get, monitoring_url

HEALTHZ_MAX_BYTES = 4096


def run_healthcheck(host: str, port: int, *, timeout: float, out: TextIO, err: TextIO) -> int:
    """`healthy: URL` on `out` and 0 for HTTP 200; `unhealthy: URL: why` on `err` and 1
    otherwise. MONITORING_PORT=0 (no endpoint to ask) counts as healthy."""
    url = monitoring_url(host, port, "/healthz")
    if url is None:
        print("healthy: monitoring endpoint disabled (MONITORING_PORT=0)", file=out)
        return 0
    try:
        status, _ = get(url, timeout, HEALTHZ_MAX_BYTES)
    except AgentUnavailable as e:
        print(f"unhealthy: {e}", file=err)
        return 1
    if status != 200:
        print(f"unhealthy: {url}: HTTP {status}", file=err)
        return 1
    print(f"healthy: {url}", file=out)
    return 0
