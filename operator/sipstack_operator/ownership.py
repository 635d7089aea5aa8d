"""Pure: whether an object with a child's name is this connector's own (never
adopt, read or delete someone else's). Used before server-side apply
(children.py) and before reading a control token (secretrefs.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sipstack_operator.render import CONNECTOR_LABEL


def owned_by(obj: Mapping[str, Any], name: str, uid: str) -> bool:
    """Ours: an ownerReference to this connector's uid, or (a retained state PVC,
    which has no owner) the connector label render.py sets on it."""
    meta = obj.get("metadata") or {}
    if uid and any(o.get("uid") == uid for o in meta.get("ownerReferences") or []):
        return True
    retained_pvc = obj.get("kind") == "PersistentVolumeClaim" and not meta.get("ownerReferences")
    return retained_pvc and (meta.get("labels") or {}).get(CONNECTOR_LABEL) == name
