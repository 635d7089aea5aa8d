"""kopf's settings for this operator, in one place.

`ProcessSettings.from_env()` reads, once, what the operator's pod tells it:

- `POD_NAME` (downward API): the peering identity and the events'
  reportingInstance; default: the host name;
- `SIPSTACK_PEERING`: name of the KopfPeering (namespaced operator) or
  ClusterKopfPeering (all namespaces) object; default `sipstack-operator`;
- `SIPSTACK_STANDALONE=true`: no peering (one replica only, e.g. without the
  kopf.dev CRDs);
- `SIPSTACK_PEERING_PRIORITY`: overrides the priority derived from POD_NAME.

`configure(settings, process)` applies them with kopf's production settings:

- peering is mandatory (unless standalone): every replica watches the peering
  object; only the one with the highest priority handles connectors, the
  others stand by and take over when it stops (at once after a graceful exit,
  after the peering lifetime of 60 s after a crash). The priority is derived
  from the pod name, so the replicas of one Deployment differ (kopf freezes
  all operators of equal priority);
- events are reported as `sipstack-operator` with the pod as instance
  (reportingComponent, reportingInstance, source.component), named
  `sipstack-operator-<random>`; kopf's own events only at WARNING (our
  condition transitions are posted explicitly);
- `settings.queueing` (the former `batching`): handler error delays;
- watch server/client/connect and request timeouts; progress and diff-base in
  annotations under sipstack.com; namespace/CRD scanning disabled (exact
  namespaces only); the finalizer sipstack.com/operator.
"""

from __future__ import annotations

import hashlib
import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass

import kopf

from sipstack_operator.diffbase import diffbase_storage
from sipstack_operator.spec import GROUP

COMPONENT = "sipstack-operator"
DEFAULT_PEERING = "sipstack-operator"
FINALIZER = f"{GROUP}/operator"
ERROR_DELAYS = (1, 2, 5, 10, 30, 60)


class SettingsError(ValueError):
    """A bad environment value; the message names the variable."""


def priority_of(pod_name: str) -> int:
    """A stable priority per pod name (0 .. 2**31-1): replicas differ, restarts keep it."""
    return int.from_bytes(hashlib.sha256(pod_name.encode()).digest()[:4], "big") & 0x7FFFFFFF


@dataclass(frozen=True)
class ProcessSettings:
    pod_name: str
    peering_name: str = DEFAULT_PEERING
    standalone: bool = False
    priority: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ProcessSettings:
        pod_name = env.get("POD_NAME", "").strip() or socket.gethostname()
        standalone_text = env.get("SIPSTACK_STANDALONE", "").strip().lower()
        if standalone_text not in ("", "true", "false", "1", "0", "yes", "no"):
            raise SettingsError(
                f"SIPSTACK_STANDALONE must be true or false, got {standalone_text!r}"
            )
        priority_text = env.get("SIPSTACK_PEERING_PRIORITY", "").strip()
        try:
            priority = int(priority_text) if priority_text else priority_of(pod_name)
        except ValueError:
            raise SettingsError(
                f"SIPSTACK_PEERING_PRIORITY must be an integer, got {priority_text!r}"
            ) from None
        peering_name = env.get("SIPSTACK_PEERING", "").strip() or DEFAULT_PEERING
        if len(peering_name) > 253 or not all(c.isalnum() or c in "-." for c in peering_name):
            raise SettingsError(f"SIPSTACK_PEERING must be an object name, got {peering_name!r}")
        return cls(
            pod_name=pod_name,
            peering_name=peering_name.lower(),
            standalone=standalone_text in ("true", "1", "yes"),
            priority=priority,
        )


def configure(settings: kopf.OperatorSettings, process: ProcessSettings) -> None:
    """Apply this operator's settings (a `--standalone` given to kopf is kept)."""
    if process.standalone:
        settings.peering.standalone = True
    if not settings.peering.standalone:
        settings.peering.mandatory = True
        settings.peering.name = process.peering_name
        settings.peering.priority = process.priority
        settings.peering.stealth = True  # no log line per keep-alive
    settings.posting.reporting_component = COMPONENT
    settings.posting.reporting_instance = process.pod_name
    settings.posting.event_name_prefix = f"{COMPONENT}-"
    settings.posting.level = logging.WARNING
    settings.scanning.disabled = True  # exact namespaces only; no CRD/namespace scans
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = diffbase_storage()  # digests, not a spec copy
    settings.watching.server_timeout = 300  # ask the API server to end each watch after 5 min
    settings.watching.client_timeout = 330  # ... and give up on a silent one 30 s later
    settings.watching.connect_timeout = 30
    settings.networking.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.queueing.error_delays = ERROR_DELAYS
    # A connector deleted while its status timer runs waits for the timer to exit:
    # kopf polls for that every cancellation_polling seconds (60 by default).
    settings.background.cancellation_polling = 2
