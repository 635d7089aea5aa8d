"""kopf wiring only: which event calls which reconcile step.

- create / update / resume of an AsteriskConnector -> `Reconciler.reconcile`
  (server-side apply of the children, conditions). A missing Secret or a
  failed apply -> kopf.TemporaryError with an exponential delay (no busy
  loop); an invalid spec -> kopf.PermanentError.
- an index `connector_secrets` maps (namespace, secret name) to the
  connectors that reference it; a Secret event (added, modified, deleted)
  re-reconciles those connectors, so a rotated password or API key rolls the
  agent (the config hash on the pod template changes), and a deleted Secret
  turns SecretsResolved False.
- a timer per connector refreshes the status from the Deployment and the
  agent's /status (SIPSTACK_STATUS_INTERVAL, default 30 s).
- settings per kopf's production notes: standalone (one replica, no
  peering), watch server/client/connect timeouts, request timeouts, k8s
  Events only for warnings from kopf itself (our transitions are posted
  explicitly), progress and diff-base in annotations under sipstack.com
  (the status schema is structural: nothing of kopf's goes into status; the
  diff-base holds digests of the tenant maps, see diffbase.py), a
  finalizer named sipstack.com/operator (kopf needs one for the timer).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
from collections.abc import Mapping
from typing import Any, cast

import aiohttp
import kopf

from sipstack_operator.api import KubeApi, load_client_configuration
from sipstack_operator.diffbase import diffbase_storage
from sipstack_operator.reconcile import OperatorConfig, ReconcileError, Reconciler
from sipstack_operator.spec import GROUP, PLURAL, VERSION, SpecError

CONFIG = OperatorConfig.from_env()
FINALIZER = f"{GROUP}/operator"
SECRET_FANOUT = 16  # connectors reconciled at once after one Secret changed


class _Runtime:
    reconciler: Reconciler | None = None
    session: aiohttp.ClientSession | None = None


RUNTIME = _Runtime()


def _reconciler() -> Reconciler:
    if RUNTIME.reconciler is None:
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return RUNTIME.reconciler


def _post_event(body: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
    kopf.event(kopf.Body(cast(Any, dict(body))), type=event_type, reason=reason, message=message)


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    return copy.deepcopy({k: body[k] for k in body})


# --------------------------------------------------------------------------- lifecycle


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.peering.standalone = True
    settings.scanning.disabled = True  # exact namespaces only; no CRD/namespace scans
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = diffbase_storage()  # tenant maps as digests
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300  # ask the API server to end each watch after 5 min
    settings.watching.client_timeout = 330  # ... and give up on a silent one 30 s later
    settings.watching.connect_timeout = 30
    settings.networking.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.batching.error_delays = (1, 2, 5, 10, 30, 60)

    configuration = load_client_configuration()
    RUNTIME.session = aiohttp.ClientSession()
    RUNTIME.reconciler = Reconciler(
        KubeApi(configuration), CONFIG, post_event=_post_event, session=RUNTIME.session
    )


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if RUNTIME.session is not None:
        await RUNTIME.session.close()
    if RUNTIME.reconciler is not None:
        RUNTIME.reconciler.api.close()
    RUNTIME.session = None
    RUNTIME.reconciler = None


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    if os.environ.get("KUBECONFIG"):
        return kopf.login_with_kubeconfig(**kwargs)
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.probe(id="connectors")
def probe_connectors(**_: Any) -> int:
    return 0 if RUNTIME.reconciler is None else len(RUNTIME.reconciler._locks)


# --------------------------------------------------------------------------- connectors


def referenced_secrets(spec: Any) -> set[str]:
    """Names of Secrets referenced anywhere in a (possibly invalid) spec."""
    found: set[str] = set()
    if isinstance(spec, Mapping):
        for key, value in spec.items():
            if str(key).endswith("SecretRef") and isinstance(value, Mapping):
                if isinstance(value.get("name"), str):
                    found.add(value["name"])
            else:
                found |= referenced_secrets(value)
    elif isinstance(spec, list):
        for item in spec:
            found |= referenced_secrets(item)
    return found


@kopf.index(GROUP, VERSION, PLURAL)
def connector_secrets(
    namespace: str | None, name: str, spec: Mapping[str, Any], **_: Any
) -> dict[tuple[str, str], str]:
    return {(namespace or "", secret): name for secret in referenced_secrets(spec)}


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def reconcile_connector(body: kopf.Body, retry: int, **_: Any) -> None:
    try:
        await _reconciler().reconcile(_plain(body))
    except SpecError as e:
        raise kopf.PermanentError(str(e)) from None
    except ReconcileError as e:
        raise kopf.TemporaryError(str(e), delay=CONFIG.retry_delay(retry)) from None


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def forget_connector(namespace: str | None, name: str, **_: Any) -> None:
    # The children go with the CR (ownerReferences); only memory to free here.
    if RUNTIME.reconciler is not None:
        RUNTIME.reconciler.forget(namespace or "", name)


@kopf.timer(
    GROUP,
    VERSION,
    PLURAL,
    interval=CONFIG.status_interval,
    initial_delay=min(5.0, CONFIG.status_interval),
)
async def refresh_status(body: kopf.Body, **kwargs: Any) -> None:
    reconciler = RUNTIME.reconciler
    if reconciler is None or kwargs.get("stopped"):
        return  # starting or stopping: the next round will do
    await reconciler.refresh(_plain(body))


# --------------------------------------------------------------------------- secrets


@kopf.on.event("", "v1", "secrets")
async def secret_changed(
    type: str,
    name: str,
    namespace: str | None,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **kwargs: Any,
) -> None:
    if not type or not namespace:
        return  # the initial listing: the resume handlers reconcile everything anyway
    index: kopf.Index[tuple[str, str], str] = kwargs["connector_secrets"]
    users = sorted(set(index.get((namespace, name), [])))
    if not users:
        return
    reconciler = _reconciler()
    limit = asyncio.Semaphore(SECRET_FANOUT)

    async def one(connector: str) -> None:
        async with limit:
            body = await reconciler.api.get_connector(namespace, connector)
            if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
                return
            logger.info("Secret %s %s: reconciling connector %s", name, type.lower(), connector)
            try:
                await reconciler.reconcile(body)
            except (ReconcileError, SpecError) as e:
                # The conditions say what is wrong; the connector's own handler retries.
                logger.warning("connector %s/%s: %s", namespace, connector, e)

    await asyncio.gather(*(one(connector) for connector in users))
