"""The two plain HTML pages (no build step): the agent's status page, served at `/`
on MONITORING_PORT (health.py), and the local receiver's call table (receiver/)."""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def page(name: str) -> str:
    """The text of `status.html` or `receiver.html`."""
    return files(__name__).joinpath(name).read_text(encoding="utf-8")
