"""The operator's install settings, read once from its environment (the chart's
Deployment sets them): the default agent image, status and control URLs and
timeouts, retry delays, the metrics port and the allow-list (allowlist.py).
A bad value raises ValueError naming its variable."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from sipstack_operator.allowlist import AllowList
from sipstack_operator.render import DEFAULT_AGENT_IMAGE


@dataclass(frozen=True)
class OperatorConfig:
    default_image: str = DEFAULT_AGENT_IMAGE
    status_interval: float = 30.0  # seconds between two status refreshes per connector
    agent_status_url: str = "http://{service}.{namespace}.svc:8000/status"
    agent_status_timeout: float = 3.0
    # The agent's control endpoint (relay.py); {action}: resend, dead-letters/retry, ...
    agent_control_url: str = "http://{service}.{namespace}.svc:8000/control/{action}"
    agent_control_timeout: float = 10.0
    retry_base: float = 10.0  # first retry after a missing Secret / failed apply
    retry_cap: float = 300.0
    metrics_port: int = 9090  # /metrics (sipstack_operator/metrics.py); 0 = off
    # What a connector may ask for (allowlist.py): API hosts, images, volumes, Secrets.
    allow: AllowList = field(
        default_factory=lambda: AllowList.from_env({}, default_image=DEFAULT_AGENT_IMAGE)
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env
        d = cls()
        default_image = env.get("SIPSTACK_AGENT_IMAGE") or d.default_image
        return cls(
            default_image=default_image,
            status_interval=float(env.get("SIPSTACK_STATUS_INTERVAL") or d.status_interval),
            agent_status_url=env.get("SIPSTACK_AGENT_STATUS_URL") or d.agent_status_url,
            agent_status_timeout=float(
                env.get("SIPSTACK_AGENT_STATUS_TIMEOUT") or d.agent_status_timeout
            ),
            agent_control_url=env.get("SIPSTACK_AGENT_CONTROL_URL") or d.agent_control_url,
            agent_control_timeout=float(
                env.get("SIPSTACK_AGENT_CONTROL_TIMEOUT") or d.agent_control_timeout
            ),
            retry_base=float(env.get("SIPSTACK_RETRY_BASE") or d.retry_base),
            retry_cap=float(env.get("SIPSTACK_RETRY_CAP") or d.retry_cap),
            metrics_port=_port(env, "SIPSTACK_METRICS_PORT", d.metrics_port),
            allow=AllowList.from_env(env, default_image=default_image),
        )

    @property
    def drain_poll(self) -> float:
        """Seconds between two looks at a draining agent."""
        return min(self.status_interval, 10.0)

    def retry_delay(self, retry: int) -> float:
        return float(min(self.retry_cap, self.retry_base * (2 ** min(retry, 16))))


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) > 65535:
        raise ValueError(f"{name} must be a port number from 0 (off) to 65535, got {raw!r}")
    return int(raw)
