"""A connector's Secrets: the referenced keys read by name (never listed or
watched; the allow-list's label checked before a value is used), a digest of
them for the timer's rotation check, and the control token of its own
<name>-control Secret (made once, kept, never read from a Secret not ours)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets as random_tokens
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sipstack_operator.allowlist import AllowList
from sipstack_operator.api import KubeApi
from sipstack_operator.ownership import owned_by
from sipstack_operator.render import CONTROL_TOKEN_KEY, Names
from sipstack_operator.spec import ConnectorSpec

CONTROL_TOKEN_MIN = 16  # the agent's minimum (CONTROL_TOKEN)


@dataclass(frozen=True)
class Resolved:
    values: dict[tuple[str, str], str]  # (Secret, key) -> value
    problems: list[str]  # missing Secrets and keys, naming Secret and key only
    refused: list[str]  # Secrets the allow-list refuses (read by name, never used)

    @property
    def digest(self) -> str:
        """A digest of the values and problems (never the values themselves)."""
        text = json.dumps(
            [sorted([*k, v] for k, v in self.values.items()), self.problems + self.refused]
        )
        return hashlib.sha256(text.encode()).hexdigest()


def decode_secret(obj: Mapping[str, Any]) -> dict[str, str]:
    """A Secret's data as text (stringData too, for servers that keep it verbatim)."""
    out: dict[str, str] = {}
    for key, value in (obj.get("data") or {}).items():
        try:
            out[str(key)] = base64.b64decode(str(value), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            out[str(key)] = ""  # binary or garbage: present but unusable as text
    for key, value in (obj.get("stringData") or {}).items():
        out[str(key)] = str(value)
    return out


async def resolve(api: KubeApi, allow: AllowList, spec: ConnectorSpec) -> Resolved:
    """Values of every referenced key, what is missing, and what the allow-list refuses."""
    fetched: dict[str, dict[str, str] | None] = {}
    refused: list[str] = []
    reported: set[str] = set()
    for secret_name in spec.secret_names():
        obj = await api.get_secret(spec.namespace, secret_name)
        why = allow.check_secret(obj) if obj is not None else None
        if why is not None:
            refused.append(why)
            reported.add(secret_name)
            obj = None
        fetched[secret_name] = decode_secret(obj) if obj is not None else None
    values: dict[tuple[str, str], str] = {}
    problems: list[str] = []
    for ref in spec.secret_refs():
        data = fetched[ref.name]
        if data is None:
            if ref.name not in reported:
                problems.append(f"Secret {ref.name!r} not found in namespace {spec.namespace!r}")
                reported.add(ref.name)
        elif ref.key not in data:
            problems.append(f"key {ref.key!r} not found in Secret {ref.name!r}")
        elif not data[ref.key]:
            problems.append(f"key {ref.key!r} of Secret {ref.name!r} is empty or not text")
        else:
            values[(ref.name, ref.key)] = data[ref.key]
    return Resolved(values, problems, refused)


def own_control_token(secret: Mapping[str, Any] | None, name: str, uid: str) -> str | None:
    """The usable token of the connector's own <name>-control Secret, else None
    (missing, not this connector's, or not a token the agent accepts)."""
    if secret is None or not owned_by(secret, name, uid):
        return None
    token = decode_secret(secret).get(CONTROL_TOKEN_KEY, "")
    if len(token) >= CONTROL_TOKEN_MIN and token.isprintable() and " " not in token:
        return token
    return None


async def control_token(api: KubeApi, spec: ConnectorSpec, uid: str) -> str:
    """The connector's control token: the one in its <name>-control Secret, else a
    new random one (32 bytes), applied with the other children. Created once and
    kept; a Secret of that name this connector does not own is refused with the
    other foreign children (its token is never read into a new Secret)."""
    existing = await api.get_secret(spec.namespace, Names.of(spec.name).control_secret)
    return own_control_token(existing, spec.name, uid) or random_tokens.token_urlsafe(32)
