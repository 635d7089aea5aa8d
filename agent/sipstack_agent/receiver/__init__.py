"""The local stand-in for the SIPSTACK API (tests, demo, bench); see docs/shipping.md."""

from sipstack_agent.receiver.server import FaultPlan, Receiver, serve
from sipstack_agent.rules.api_urls import CALLS_PATH, RECORDING_PATH

__all__ = ["CALLS_PATH", "RECORDING_PATH", "FaultPlan", "Receiver", "serve"]
