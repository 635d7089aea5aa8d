"""Where the running agent answers on this host, and GET from its monitoring port.

The one home for "GET the agent's MONITORING_PORT": `get` (status code and
body, bounded), used by `healthcheck` (/healthz), `status` and the support
bundle (/status through `fetch_json`).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

MAX_STATUS_BYTES = 1 << 20


class AgentUnavailable(Exception):
    """The agent did not answer (with a one-line reason)."""


def monitoring_url(host: str, port: int, path: str = "") -> str | None:
    """`http://127.0.0.1:8000/path` for MONITORING_HOST/PORT (None when the port is 0)."""
    if not port:
        return None
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - the wildcard the agent listens on
        host = "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}{path}"


def get(url: str, timeout: float = 4.0, max_bytes: int = MAX_STATUS_BYTES) -> tuple[int, bytes]:
    """GET `url`: (HTTP status, body); AgentUnavailable when there is no 2xx answer
    or the body is larger than `max_bytes`."""
    if not url.startswith(("http://", "https://")):
        raise AgentUnavailable(f"{url}: not an http(s) URL")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - checked above
            status = int(resp.status)
            body = resp.read(max_bytes + 1)
    except urllib.error.HTTPError as e:
        raise AgentUnavailable(f"{url}: HTTP {e.code}") from e
    except (OSError, ValueError) as e:
        raise AgentUnavailable(f"{url}: {getattr(e, 'reason', e)}") from e
    if len(body) > max_bytes:
        raise AgentUnavailable(f"{url}: answer larger than {max_bytes} bytes")
    return status, body


def fetch_json(url: str, timeout: float = 4.0) -> dict[str, object]:
    """GET a JSON object (the agent's /status); AgentUnavailable when there is none."""
    _, body = get(url, timeout)
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise AgentUnavailable(f"{url}: not JSON ({e})") from e
    if not isinstance(doc, dict):
        raise AgentUnavailable(f"{url}: not a JSON object")
    return doc
