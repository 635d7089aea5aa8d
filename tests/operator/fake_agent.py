"""A local HTTP server answering GET /{namespace}/{name}/status like the agents do.

The body has the shape of the real agent's /status (sipstack_agent.app
`Agent.status()` behind health.py's `handle_status`, which adds `version`):
identity, stages, readiness problems, checkpoints, the store's `backlog`
block and the shipper's block. Tests change the outbox depth per connector
with `set_backlog`; the operator reaches the server through
SIPSTACK_AGENT_STATUS_URL's template (OperatorConfig.agent_status_url).
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp.web

from .operator_testlib import agent_status_doc as schema_doc


def agent_status_doc(connector_id: str, outbox_depth: int) -> dict[str, Any]:
    """A /status body valid against the agent's status schema (operator_testlib)."""
    return schema_doc(
        connector_id=connector_id,
        backlog={"outbox_depth": outbox_depth},
        shipper={"outbox_depth": outbox_depth, "last_success_at": "2026-11-25T21:00:00+00:00"},
    )


class FakeAgents:
    def __init__(self) -> None:
        self.docs: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: dict[tuple[str, str], int] = {}
        self.unreadable: set[tuple[str, str]] = set()
        self.url_template = ""

    def set_backlog(self, namespace: str, name: str, depth: int) -> None:
        self.docs[(namespace, name)] = agent_status_doc(f"{namespace}/{name}", depth)

    def set_problems(self, namespace: str, name: str, problems: list[str]) -> None:
        self.docs[(namespace, name)]["ready_problems"] = list(problems)

    def set_unreadable(self, namespace: str, name: str) -> None:
        """/status answers 503 from now on (no endpoints, a crash-looping pod...)."""
        self.unreadable.add((namespace, name))

    async def _handle(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        key = (request.match_info["namespace"], request.match_info["name"])
        self.requests[key] = self.requests.get(key, 0) + 1
        if key in self.unreadable:
            return aiohttp.web.json_response({"error": "unavailable"}, status=503)
        doc = self.docs.get(key)
        if doc is None:
            return aiohttp.web.json_response({"error": "no such agent"}, status=404)
        return aiohttp.web.json_response(copy.deepcopy(doc))


@asynccontextmanager
async def serve_agents() -> AsyncIterator[FakeAgents]:
    agents = FakeAgents()
    app = aiohttp.web.Application()
    app.router.add_get("/{namespace}/{name}/status", agents._handle)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    agents.url_template = f"http://127.0.0.1:{port}/{{namespace}}/{{name}}/status"
    try:
        yield agents
    finally:
        await runner.cleanup()
