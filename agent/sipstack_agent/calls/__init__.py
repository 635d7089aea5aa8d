"""The pure call core: rows of one call -> `Call` -> ingest documents.

No I/O here (stdlib, model and config only). The state store calls
`evaluate()` for every dirty or due call and persists what it returns.
"""

from sipstack_agent.calls.assemble import assemble, group_linkedids
from sipstack_agent.calls.document import build_document, fingerprint, idempotency_key
from sipstack_agent.calls.evaluate import Evaluation, evaluate
from sipstack_agent.calls.schema import CALL_DOCUMENT_SCHEMA
from sipstack_agent.calls.types import Call, Channel, Derived, QueueInfo, Transfer
from sipstack_agent.rules.ids import linkedid_sort_key, smallest_linkedid

__all__ = [
    "CALL_DOCUMENT_SCHEMA",
    "Call",
    "Channel",
    "Derived",
    "Evaluation",
    "QueueInfo",
    "Transfer",
    "assemble",
    "build_document",
    "evaluate",
    "fingerprint",
    "group_linkedids",
    "idempotency_key",
    "linkedid_sort_key",
    "smallest_linkedid",
]
