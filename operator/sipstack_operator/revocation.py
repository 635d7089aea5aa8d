"""Revocation: a Secret the running agent uses goes away -> the agent stops.

The agent reads its credentials once, at start, from files of a projected
volume of the referenced Secrets (render.py); the kubelet keeps the last
content in a running pod's volume after a Secret is deleted. So when a
referenced Secret is deleted, loses its key (or the key turns empty), or no
longer carries the allow-list's opt-in label, while the connector's agent
Deployment exists, the operator:

- scales that Deployment to 0 (a merge patch of spec.replicas by the field
  manager `sipstack-operator-revocation`; nothing else is touched: the state
  PVC keeps the outbox and the checkpoints, so nothing is lost);
- writes SecretsResolved, Reconciled, AgentAvailable and Ready False with
  reason SecretRevoked, naming the Secret and key (a Warning event each);
- keeps retrying; when the Secret is back, the next reconcile applies the
  Deployment again (server-side apply with force takes spec.replicas back
  to 1, or 0 when paused) and the new pod mounts the new files.

A new pod cannot start meanwhile either: the volume is not optional, so a
missing Secret or key fails the mount. A connector whose Deployment does
not exist yet (never ran) reports SecretNotFound / SecretKeyNotFound:
nothing to stop. Pure functions; reconcile.py does the calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sipstack_operator import status as st
from sipstack_operator.render import Names
from sipstack_operator.spec import ConnectorSpec

SECRET_REVOKED = "SecretRevoked"  # noqa: S105 - a condition reason
FIELD_MANAGER = "sipstack-operator-revocation"


def agent_to_stop(deployment: Mapping[str, Any] | None, uid: str) -> bool:
    """The connector's own agent Deployment exists: a lost Secret is a revocation."""
    if deployment is None or not uid:
        return False
    owners = (deployment.get("metadata") or {}).get("ownerReferences") or []
    return any(o.get("uid") == uid for o in owners)


def needs_scale_down(deployment: Mapping[str, Any]) -> bool:
    return (deployment.get("spec") or {}).get("replicas") != 0


def message(spec: ConnectorSpec, problems: Sequence[str]) -> str:
    names = Names.of(spec.name)
    return (
        f"{'; '.join(problems)}: the agent is stopped (Deployment {names.deployment} scaled "
        f"to 0; the state PVC {names.pvc} is kept) until the Secret is back"
    )


def conditions(spec: ConnectorSpec, problems: Sequence[str]) -> list[st.Condition]:
    text = message(spec, problems)
    return [
        st.Condition(kind, st.FALSE, SECRET_REVOKED, text)
        for kind in (st.READY, st.RECONCILED, st.SECRETS_RESOLVED, st.AGENT_AVAILABLE)
    ]


def kept_agent_condition(known: Mapping[str, st.Condition]) -> st.Condition | None:
    """While revoked, a status refresh keeps AgentAvailable's SecretRevoked (a
    Deployment at 0 replicas is not 'waiting for the agent pod')."""
    secrets = known.get(st.SECRETS_RESOLVED)
    agent = known.get(st.AGENT_AVAILABLE)
    if secrets is not None and secrets.reason == SECRET_REVOKED and agent is not None:
        return agent
    return None
