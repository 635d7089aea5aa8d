"""Revocation: a Secret the running agent uses goes away -> the agent stops.

The agent reads its credentials once, at start, from files of a projected
volume of the referenced Secrets (render.py); the kubelet keeps the last
content in a running pod's volume after a Secret is deleted. So when a
Secret key the connector's live Deployment mounts (its pod template names
it) is deleted, removed from its Secret (or turns empty), or its Secret no
longer carries the allow-list's opt-in label, the operator:

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
not exist yet (never ran), or a spec change to a Secret the running pod
does not mount yet (a typo in a new secretRef), reports SecretNotFound /
SecretKeyNotFound and leaves the running agent alone: nothing it uses was
revoked. Pure functions; reconcile.py does the calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sipstack_operator import status as st
from sipstack_operator.render import Names
from sipstack_operator.spec import ConnectorSpec

SECRET_REVOKED = "SecretRevoked"  # noqa: S105 - a condition reason
FIELD_MANAGER = "sipstack-operator-revocation"


def mounted_keys(deployment: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(Secret, key) of every Secret key the Deployment's pod template mounts
    (secret volumes and the secret sources of projected volumes)."""
    template = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    keys: set[tuple[str, str]] = set()
    for volume in template.get("volumes") or []:
        sources = [volume] if "secret" in volume else []
        sources += (volume.get("projected") or {}).get("sources") or []
        for source in sources:
            secret = source.get("secret") or {}
            name = secret.get("secretName") or secret.get("name")
            keys.update((str(name), str(i.get("key"))) for i in secret.get("items") or [])
    return keys


def revoked_keys(
    deployment: Mapping[str, Any] | None, uid: str, missing: Iterable[tuple[str, str]]
) -> set[tuple[str, str]]:
    """The missing (Secret, key) pairs the connector's own running Deployment mounts."""
    if deployment is None or not uid:
        return set()
    owners = (deployment.get("metadata") or {}).get("ownerReferences") or []
    if not any(o.get("uid") == uid for o in owners):
        return set()
    return mounted_keys(deployment) & set(missing)


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
