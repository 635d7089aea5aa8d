"""Which edits roll the agent pod (issue 11 §5): the rendered pod template
changes only when something the pod consumes changes (its env and the Secret
data it reads, image, volumes, resources, probes...), never for a
ServiceMonitor or label edit, a pause, or an operator upgrade.

Each row edits the example connector pbx-east (examples/pbx-east.yaml, a
pinned spec.image, a CA bundle, recordings and a ServiceMonitor) and/or its
Secrets (examples/secrets.yaml) and renders both through `render_documents`,
the path of `sipstack-operator render` and of the reconciler.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sipstack_operator import handlers
from sipstack_operator import render as render_module
from sipstack_operator.cli import render_documents
from sipstack_operator.config import OperatorConfig
from sipstack_operator.render import HASH_ANNOTATION

from .kmock_emulator import Emulator
from .operator_testlib import EXAMPLES, load_docs
from .test_operator_kmock import (  # the fixtures and helpers of the kmock scenarios
    DEPLOYMENTS,
    cluster,
    condition,
    connector,
    create,
    eventually,
    obj,
    operator,
    seed,
)

__all__ = ["cluster"]  # a fixture, used by name

Docs = list[dict[str, Any]]
DEFAULT_IMAGE = "sipstack/connector-asterisk:0.14.0"
VERSION = "app.kubernetes.io/version"
PINNED_IMAGE = "registry.example.com/sipstack/connector-asterisk:0.14.0-canary"


def _cr() -> dict[str, Any]:
    (cr,) = load_docs(EXAMPLES / "pbx-east.yaml")
    cr["spec"]["image"] = PINNED_IMAGE  # a canary pinned to its own agent image
    return cr


def _secrets() -> Docs:
    return load_docs(EXAMPLES / "secrets.yaml")


def _secret(docs: Docs, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["metadata"]["name"] == name]
    return doc


@dataclass(frozen=True)
class Edit:
    name: str
    rolls: bool
    cr: Callable[[dict[str, Any]], None] = lambda cr: None
    secrets: Callable[[Docs], None] = lambda docs: None
    operator_version: str = ""


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(cr: dict[str, Any]) -> None:
        node = cr
        *parents, last = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return edit


def _secret_value(name: str, key: str, value: str) -> Callable[[Docs], None]:
    def edit(docs: Docs) -> None:
        _secret(docs, name)["stringData"][key] = value

    return edit


def _other_secret_added(docs: Docs) -> None:
    docs.append(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "unrelated", "namespace": "telephony"},
            "stringData": {"token": "not-read-by-the-agent"},
        }
    )


EDITS = [
    # Not consumed by the pod: no rollout.
    Edit(
        "serviceMonitor interval", False, cr=_set("spec.monitoring.serviceMonitor.interval", "15s")
    ),
    Edit(
        "serviceMonitor labels",
        False,
        cr=_set("spec.monitoring.serviceMonitor.labels", {"release": "other-prometheus"}),
    ),
    Edit(
        "serviceMonitor disabled", False, cr=_set("spec.monitoring.serviceMonitor.enabled", False)
    ),
    Edit("label on the CR", False, cr=_set("metadata.labels", {"team": "voice"})),
    Edit("annotation on the CR", False, cr=_set("metadata.annotations", {"note": "x"})),
    Edit("state PVC size", False, cr=_set("spec.state.size", "5Gi")),
    Edit("operator version bump", False, operator_version="99.0.0"),
    Edit("a Secret the agent does not read", False, secrets=_other_secret_added),
    Edit(
        "a key of a read Secret the agent does not use",
        False,
        secrets=_secret_value("pbx-east-db", "unused", "x"),
    ),
    # Consumed by the pod: a rollout.
    Edit("image", True, cr=_set("spec.image", PINNED_IMAGE + "2")),
    Edit("DB host", True, cr=_set("spec.database.host", "pg2.pbx-east.example.com")),
    Edit(
        "API key Secret data",
        True,
        secrets=_secret_value("sipstack-api", "api-key", "sk_ffffffffffffffffffffffffffffffff"),
    ),
    Edit("DB password Secret data", True, secrets=_secret_value("pbx-east-db", "password", "new")),
    Edit(
        "CA bundle Secret data (mounted, not in the env)",
        True,
        secrets=_secret_value("pbx-east-db", "ca.crt", "-----BEGIN CERTIFICATE-----\nnew\n"),
    ),
    Edit("resources", True, cr=_set("spec.resources.limits.memory", "1Gi")),
    Edit("shipping batch size (env)", True, cr=_set("spec.shipping.batchSize", 100)),
    Edit(
        "recordings volume",
        True,
        cr=_set("spec.recordings.volume", {"nfs": {"server": "nfs2", "path": "/x"}}),
    ),
    Edit("pod labels", True, cr=_set("spec.podLabels", {"cost-center": "42"})),
]


def _deployment(cr: dict[str, Any], secrets: Docs) -> dict[str, Any]:
    (deployment,) = [
        c
        for c in render_documents([cr], secrets, default_image=DEFAULT_IMAGE)
        if c["kind"] == "Deployment"
    ]
    return deployment


@pytest.mark.parametrize("edit", EDITS, ids=[e.name for e in EDITS])
def test_pod_template_changes_only_for_what_the_pod_consumes(
    edit: Edit, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _deployment(_cr(), _secrets())
    cr, secrets = _cr(), _secrets()
    edit.cr(cr)
    edit.secrets(secrets)
    if edit.operator_version:
        monkeypatch.setattr(render_module, "__version__", edit.operator_version)
    after = _deployment(cr, secrets)
    template_before, template_after = before["spec"]["template"], after["spec"]["template"]
    assert (template_before != template_after) is edit.rolls, (
        f"{edit.name}: the pod template {'did not change' if edit.rolls else 'changed'}"
    )
    hash_changed = (
        template_before["metadata"]["annotations"][HASH_ANNOTATION]
        != template_after["metadata"]["annotations"][HASH_ANNOTATION]
    )
    if not edit.rolls:
        assert not hash_changed, edit.name


def test_the_operator_version_stays_on_the_deployment_metadata(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    current = render_module.__version__
    before = _deployment(_cr(), _secrets())
    monkeypatch.setattr(render_module, "__version__", "99.0.0")
    after = _deployment(_cr(), _secrets())
    assert before["metadata"]["labels"]["app.kubernetes.io/version"] == current
    assert after["metadata"]["labels"]["app.kubernetes.io/version"] == "99.0.0"
    assert "app.kubernetes.io/version" not in after["spec"]["template"]["metadata"]["labels"]
    assert after["spec"]["template"] == before["spec"]["template"]


def test_an_unpinned_connector_follows_the_operators_default_image() -> None:
    """Without spec.image the agent image is the operator's default: that one rolls."""
    cr = _cr()
    del cr["spec"]["image"]
    old = _deployment(copy.deepcopy(cr), _secrets())
    (new,) = [
        c
        for c in render_documents([cr], _secrets(), default_image=DEFAULT_IMAGE + "-next")
        if c["kind"] == "Deployment"
    ]
    assert old["spec"]["template"]["spec"]["containers"][0]["image"] == DEFAULT_IMAGE
    assert old["spec"]["template"] != new["spec"]["template"]


@pytest.mark.kmock(cls=Emulator)
@pytest.mark.timeout(60)
async def test_an_operator_upgrade_reapplies_without_touching_the_pod_template(
    cluster: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real operator, restarted as a new version: it re-applies its children
    (their version label moves) and leaves every pod template as it was."""
    # The canary's registry is on the install's allow-list (SIPSTACK_ALLOWED_IMAGE_REPOSITORIES).
    allowed = OperatorConfig.from_env(
        {
            "SIPSTACK_ALLOWED_IMAGE_REPOSITORIES": "sipstack/connector-asterisk,"
            "registry.example.com/sipstack/"
        }
    ).allow
    monkeypatch.setattr(handlers, "CONFIG", dataclasses.replace(handlers.CONFIG, allow=allowed))
    await seed(cluster)
    await create(cluster, connector(image=PINNED_IMAGE))
    await create(cluster, connector("pbx-west"))
    async with operator():
        for name in ("pbx-east", "pbx-west"):
            await eventually(
                lambda name=name: condition(cluster, name, "SecretsResolved")["status"] == "True"
            )
    before = {n: obj(cluster, DEPLOYMENTS, f"{n}-agent") for n in ("pbx-east", "pbx-west")}
    monkeypatch.setattr(render_module, "__version__", "99.0.0")

    def version(name: str) -> str:
        return str(obj(cluster, DEPLOYMENTS, f"{name}-agent")["metadata"]["labels"][VERSION])

    async with operator():
        for name in ("pbx-east", "pbx-west"):
            await eventually(lambda name=name: version(name) == "99.0.0", what=name)
    for name, old in before.items():
        new = obj(cluster, DEPLOYMENTS, f"{name}-agent")
        assert new is not None and old is not None
        assert old["metadata"]["labels"][VERSION] != "99.0.0"
        assert new["spec"]["template"] == old["spec"]["template"], name
