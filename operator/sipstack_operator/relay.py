"""Relay a connector's request (the annotation control.sipstack.com/request, controlreq.py)
to its agent's control endpoint, and record the outcome.

- The agent is called through its Service (OperatorConfig.agent_control_url)
  with ``Authorization: Bearer <token>``, the token read from the connector's
  own ``<name>-control`` Secret (owned by it; secretrefs.py made it and reads it); one
  attempt, a timeout (SIPSTACK_AGENT_CONTROL_TIMEOUT) and a bounded answer
  (MAX_ANSWER_BYTES): a failure is an outcome, not a retry loop.
- Each request id is handled once, across operator restarts: before the call
  ``status.lastRequest`` is written with outcome Running, after it with the
  outcome (Succeeded, Failed, Invalid), which is also posted as an event
  (RequestSucceeded, RequestFailed, RequestInvalid). A request whose id is
  already in status.lastRequest is skipped; one found Running by a handler
  (the operator stopped during the call, or the status write failed and kopf
  retries) is marked Failed and not sent again: at most once, never twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp

from sipstack_operator import controlreq as cr
from sipstack_operator.reconcile import Reconciler
from sipstack_operator.render import Names
from sipstack_operator.secretrefs import own_control_token

logger = logging.getLogger("sipstack_operator.relay")

MAX_ANSWER_BYTES = 1024 * 1024  # a dead-letter list with documents is the big one

INTERRUPTED = (
    "relaying this request was interrupted (the operator restarted, or writing the outcome "
    "failed): it may have reached the agent or not; check `kubectl sipstack status` and "
    "ask again with a new request"
)


class AgentUnreachableError(Exception):
    """The agent could not be asked or its answer not read (message safe to show)."""


async def handle(reconciler: Reconciler, body: Mapping[str, Any]) -> cr.Outcome | None:
    """Handle the connector's request once; the outcome, or None when there was nothing to do."""
    meta = body.get("metadata") or {}
    text = (meta.get("annotations") or {}).get(cr.REQUEST_ANNOTATION)
    try:
        request = cr.parse(text)
        invalid: cr.Outcome | None = None
    except cr.RequestError as e:
        if e.request is None:
            return None  # an empty annotation: nothing asked
        request, invalid = e.request, cr.Outcome(cr.INVALID, f"invalid request: {e}")
    previous = reconciler.current_status(body).get("lastRequest") or {}
    if previous.get("id") == request.id:
        if previous.get("outcome") != cr.RUNNING:
            return None  # handled already
        result = cr.Outcome(cr.FAILED, INTERRUPTED)
    elif invalid is not None:
        result = invalid
    else:
        await reconciler.write_fields(
            body, {"lastRequest": cr.last_request(request, cr.Outcome(cr.RUNNING, "relaying"))}
        )
        result = await _relay(reconciler, body, request)
    await reconciler.write_fields(body, {"lastRequest": cr.last_request(request, result)})
    ns, name = str(meta.get("namespace") or "default"), str(meta.get("name"))
    logger.info("%s/%s: request %s (%s): %s", ns, name, request.id, request.action, result.message)
    if reconciler.post_event is not None:
        reconciler.post_event(
            body, result.event_type, result.event_reason, f"{request.action}: {result.message}"
        )
    return result


async def _relay(
    reconciler: Reconciler, body: Mapping[str, Any], request: cr.Request
) -> cr.Outcome:
    meta = body.get("metadata") or {}
    ns, name, uid = (
        str(meta.get("namespace") or "default"),
        str(meta["name"]),
        str(meta.get("uid") or ""),
    )
    secret_name = Names.of(name).control_secret
    token = own_control_token(await reconciler.api.get_secret(ns, secret_name), name, uid)
    if token is None:
        return cr.Outcome(
            cr.FAILED,
            f"no control token: Secret {secret_name} is missing or not this connector's "
            "(it is made at the first reconcile)",
        )
    call = cr.agent_call(request)
    config = reconciler.config
    url = config.agent_control_url.format(
        service=Names.of(name).service, namespace=ns, name=name, action=call.action
    )
    if reconciler.session is None:
        return cr.Outcome(cr.FAILED, "the operator is stopping")
    try:
        status, answer = await call_agent(
            reconciler.session, url, token, call, timeout=config.agent_control_timeout
        )
    except AgentUnreachableError as e:
        return cr.Outcome(cr.FAILED, f"cannot reach the agent: {e}")
    return cr.outcome(request, status, answer)


async def call_agent(
    session: aiohttp.ClientSession,
    url: str,
    token: str,
    call: cr.AgentCall,
    *,
    timeout: float,
    max_bytes: int = MAX_ANSWER_BYTES,
) -> tuple[int, dict[str, Any]]:
    """One control call: (HTTP status, the JSON object answered). Raises
    AgentUnreachableError when there is no usable answer."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    kwargs: dict[str, Any] = {"params": call.body} if call.method == "GET" else {"json": call.body}
    try:
        async with session.request(
            call.method,
            url,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
            **kwargs,
        ) as resp:
            if resp.content_length is not None and resp.content_length > max_bytes:
                raise AgentUnreachableError(f"the answer is larger than {max_bytes} bytes")
            data = bytearray()
            async for chunk in resp.content.iter_chunked(64 * 1024):
                data.extend(chunk)
                if len(data) > max_bytes:
                    raise AgentUnreachableError(f"the answer is larger than {max_bytes} bytes")
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as e:
        raise AgentUnreachableError(f"{type(e).__name__}: {e}"[:300]) from None
    try:
        answer = json.loads(bytes(data)) if data else {}
    except ValueError:
        raise AgentUnreachableError(f"HTTP {status}, the answer is not JSON") from None
    if not isinstance(answer, dict):
        raise AgentUnreachableError(f"HTTP {status}, the answer is not a JSON object")
    return status, answer
