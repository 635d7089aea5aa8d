"""Delivery to the SIPSTACK API: the HTTP transport and the outbox's two workers
(`Shipper` for call documents, `RecordingShipper` for recording audio).

Never imports sources; see docs/shipping.md.
"""

from sipstack_agent.shipping.client import (
    AiohttpTransport,
    Response,
    Transport,
    TransportError,
    audio_content_type,
    build_headers,
    idempotency_key,
)
from sipstack_agent.shipping.outbox import (
    OutboxStore,
    Outcome,
    Shipper,
    classify,
)
from sipstack_agent.shipping.recordings import RecordingShipper
from sipstack_agent.shipping.retry import Decision, RetryPolicy, decide, parse_retry_after

__all__ = [
    "AiohttpTransport",
    "Decision",
    "OutboxStore",
    "Outcome",
    "RecordingShipper",
    "Response",
    "RetryPolicy",
    "Shipper",
    "Transport",
    "TransportError",
    "audio_content_type",
    "build_headers",
    "classify",
    "decide",
    "idempotency_key",
    "parse_retry_after",
]
