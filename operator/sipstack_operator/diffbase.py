"""What kopf stores as the last-handled configuration of a connector.

kopf keeps the "essence" of every object it handled (the spec, the labels and
the annotations that are not its own) as one JSON annotation, and compares the
next version with it to decide whether the update handler runs. The whole
metadata.annotations of an object is capped at 256 KiB, and kopf writes JSON
with non-ASCII characters escaped (up to 12 bytes for one character): a
connector near the CRD's limits, or with large annotations of its own, would
make every kopf patch of it fail.

Here each tracked stanza (spec, metadata.labels, metadata.annotations) is
stored as its sha256 digest. Any change still changes the essence, so kopf
still calls the update handler - which reconciles from the full object and
never reads kopf's diff - and the annotation is about 300 bytes whatever the
object's size.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any, cast

import kopf
from kopf._cogs.structs import bodies, dicts

from sipstack_operator.spec import GROUP

DIFFBASE_KEY = "last-handled-configuration"


def digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class DigestedDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation diff-base with every tracked stanza replaced by its digest."""

    def build(
        self,
        *,
        body: bodies.Body,
        extra_fields: Iterable[dicts.FieldSpec] | None = None,
    ) -> bodies.BodyEssence:
        essence = cast(dict[str, Any], super().build(body=body, extra_fields=extra_fields))
        digested: dict[str, Any] = {}
        for key, value in essence.items():
            if key == "metadata" and isinstance(value, dict):
                digested[key] = {name: digest(part) for name, part in value.items()}
            else:
                digested[key] = digest(value)
        return cast(bodies.BodyEssence, digested)


def diffbase_storage() -> DigestedDiffBaseStorage:
    """The diff-base storage of the operator (settings.persistence.diffbase_storage)."""
    return DigestedDiffBaseStorage(prefix=GROUP, key=DIFFBASE_KEY)
