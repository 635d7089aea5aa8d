"""The local stand-in for the SIPSTACK API (tests, demo, bench); see docs/shipping.md.

`server` the aiohttp application (`Receiver`, `FaultPlan`), `db` its SQLite,
`schema` the document validator, `command` the `sipstack-agent receive` process.
"""

from sipstack_agent.receiver.command import serve
from sipstack_agent.receiver.server import FaultPlan, Receiver

__all__ = ["FaultPlan", "Receiver", "serve"]
