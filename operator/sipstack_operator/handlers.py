"""kopf wiring only: which event calls which reconcile step.

- create / update / resume of an AsteriskConnector -> `Reconciler.reconcile`
  (server-side apply of the children, conditions). A missing Secret or a
  failed apply -> kopf.TemporaryError with an exponential delay (no busy
  loop); an invalid spec -> kopf.PermanentError.
- Secrets are never listed or watched (the operator's RBAC has only get on
  Secrets): the status timer re-reads the Secrets a connector references by
  name and re-reconciles when what they hold changed, so a rotated password
  or API key rolls the agent (the config hash on the pod template changes)
  within one SIPSTACK_STATUS_INTERVAL, and a deleted Secret (or key, or
  opt-in label) stops a running agent: its Deployment is scaled to 0 with
  SecretsResolved False reason SecretRevoked until the Secret is back
  (revocation.py). A failed reconcile the timer started is marked pending
  and retried with backoff until it succeeds.
- a `kubectl sipstack` request (annotation control.sipstack.com/request) -> relay.py:
  relayed to the agent's control endpoint once per id, outcome in
  status.lastRequest and an event.
- delete -> `drain_connector`: the finalizer is held until the agent's
  backlog is 0, spec.drain.timeoutSeconds passed, or its /status gave no
  backlog for drain.UNREADABLE_GRACE_SECONDS (progress in status.drain and
  events); the state PVC stays unless spec.state.whenDeleted is Delete.
- a timer per connector refreshes the status from the Deployment and the
  agent's /status (SIPSTACK_STATUS_INTERVAL, default 30 s).
- Prometheus metrics (sipstack_operator/metrics.py) served from startup to
  cleanup on SIPSTACK_METRICS_PORT (default 9090, 0 = off) at /metrics.
- settings: kopfsettings.py (peering with a standby replica, events as
  sipstack-operator/<pod>, queueing, timeouts, annotations storage, diff-base
  digests: diffbase.py); at
  startup the peering object is created (KopfPeering per served namespace, or
  ClusterKopfPeering with --all-namespaces) unless running standalone.
"""

from __future__ import annotations

import copy
import datetime
import logging
import os
from collections.abc import Mapping
from typing import Any, cast
from wsgiref.simple_server import WSGIServer

import aiohttp
import kopf

from sipstack_operator import kopfsettings, metrics, relay
from sipstack_operator.api import KubeApi, load_client_configuration
from sipstack_operator.config import OperatorConfig
from sipstack_operator.controlreq import REQUEST_ANNOTATION
from sipstack_operator.errors import NOT_ALLOWED, NotAllowedError, ReconcileError
from sipstack_operator.reconcile import Reconciler
from sipstack_operator.spec import GROUP, PLURAL, VERSION, SpecError

CONFIG = OperatorConfig.from_env()
PROCESS = kopfsettings.ProcessSettings.from_env(os.environ)


class _Runtime:
    reconciler: Reconciler | None = None
    session: aiohttp.ClientSession | None = None
    metrics_server: WSGIServer | None = None


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
async def configure(
    settings: kopf.OperatorSettings,
    memo: kopf.Memo,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    kopfsettings.configure(settings, PROCESS)
    configuration = load_client_configuration()
    operator_metrics = metrics.OperatorMetrics()
    if CONFIG.metrics_port:
        RUNTIME.metrics_server = metrics.serve(operator_metrics, CONFIG.metrics_port)
    RUNTIME.session = aiohttp.ClientSession()
    api = KubeApi(configuration)
    RUNTIME.reconciler = Reconciler(
        api, CONFIG, post_event=_post_event, session=RUNTIME.session, metrics=operator_metrics
    )
    if not settings.peering.standalone:
        await _ensure_peering(api, settings, memo.get("served_namespaces"), logger)


async def _ensure_peering(
    api: KubeApi,
    settings: kopf.OperatorSettings,
    namespaces: list[str] | None,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    """Create the peering object(s) kopf's mandatory peering waits for."""
    name = settings.peering.name
    if settings.peering.clusterwide:
        targets: list[str | None] = [None]
    elif namespaces:
        targets = list(namespaces)
    else:
        logger.warning(
            "peering %r: namespaces not known (not started by sipstack-operator run): "
            "create a KopfPeering %r in each served namespace",
            name,
            name,
        )
        return
    for namespace in targets:
        if not await api.create_peering(namespace, name):
            logger.error(
                "peering %r: the kopf.dev peering CRDs are not installed "
                "(kubectl apply --server-side -f crds/kopfpeerings.kopf.dev.yaml): the operator "
                "stays paused; or run one replica with SIPSTACK_STANDALONE=true",
                name,
            )
            return


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if RUNTIME.session is not None:
        await RUNTIME.session.close()
    if RUNTIME.reconciler is not None:
        RUNTIME.reconciler.api.close()
    if RUNTIME.metrics_server is not None:
        metrics.stop(RUNTIME.metrics_server)
    RUNTIME.session = None
    RUNTIME.reconciler = None
    RUNTIME.metrics_server = None


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    if os.environ.get("KUBECONFIG"):
        return kopf.login_with_kubeconfig(**kwargs)
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.probe(id="connectors")
def probe_connectors(**_: Any) -> int:
    return 0 if RUNTIME.reconciler is None else len(RUNTIME.reconciler._locks)


# --------------------------------------------------------------------------- connectors


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def reconcile_connector(body: kopf.Body, retry: int, **_: Any) -> None:
    try:
        await _reconciler().reconcile(_plain(body))
    except SpecError as e:
        raise kopf.PermanentError(str(e)) from None
    except NotAllowedError as e:
        if e.reason == NOT_ALLOWED:  # until the CR (or a Secret: the timer sees it) changes
            raise kopf.PermanentError(str(e)) from None
        raise kopf.TemporaryError(str(e), delay=CONFIG.retry_delay(retry)) from None
    except ReconcileError as e:
        raise kopf.TemporaryError(str(e), delay=CONFIG.retry_delay(retry)) from None


@kopf.on.resume(GROUP, VERSION, PLURAL, annotations={REQUEST_ANNOTATION: kopf.PRESENT})
@kopf.on.create(GROUP, VERSION, PLURAL, annotations={REQUEST_ANNOTATION: kopf.PRESENT})
@kopf.on.update(GROUP, VERSION, PLURAL, annotations={REQUEST_ANNOTATION: kopf.PRESENT})
async def relay_request(body: kopf.Body, **_: Any) -> None:
    """A request of `kubectl sipstack` (relay.py): once per id, outcome in status.lastRequest.

    Not kopf.on.field: the diff-base keeps digests (diffbase.py), so kopf cannot
    tell which annotation changed; relay.py compares the request's id with
    status.lastRequest instead (which also makes it idempotent across restarts)."""
    await relay.handle(_reconciler(), _plain(body))


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def drain_connector(
    body: kopf.Body, namespace: str | None, name: str, started: datetime.datetime, **_: Any
) -> None:
    """Hold the finalizer until the agent's outbox is empty or spec.drain.timeoutSeconds passed.

    (Or its /status gave no backlog for drain.UNREADABLE_GRACE_SECONDS.)
    `started` is kopf's (kept in the progress annotation) and the last read
    is in status.drain.lastReadAt: both hold across operator restarts. The
    children then go with the CR (ownerReferences), the state PVC only with
    whenDeleted Delete.
    """
    reconciler = _reconciler()
    step = await reconciler.drain(_plain(body), started=started)
    if not step.done:
        raise kopf.TemporaryError(step.message, delay=CONFIG.drain_poll)
    reconciler.forget(namespace or "", name)


@kopf.timer(
    GROUP,
    VERSION,
    PLURAL,
    interval=CONFIG.status_interval,
    initial_delay=min(5.0, CONFIG.status_interval),
)
async def refresh_status(
    body: kopf.Body,
    namespace: str | None,
    name: str,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **kwargs: Any,
) -> None:
    reconciler = RUNTIME.reconciler
    if reconciler is None or kwargs.get("stopped"):
        return  # starting or stopping: the next round will do
    if body.metadata.get("deletionTimestamp"):
        return  # the drain owns the status now
    plain = _plain(body)
    if reconciler.retry_due(namespace or "", name) or await reconciler.secrets_changed(plain):
        try:
            await reconciler.reconcile(plain)
        except (ReconcileError, SpecError) as e:
            delay = reconciler.mark_pending(namespace or "", name)
            logger.warning("retried reconcile failed: %s (next try in %.0f s)", e, delay)
    await reconciler.refresh(plain)
