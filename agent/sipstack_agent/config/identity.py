"""The identity section: the fields stamped on every document (`Identity`)."""

from __future__ import annotations

import os
import re

from .. import __version__
from .reader import Reader
from .spec import Invalid, Notes, Table, integer, show, text
from .types import Identity

_CONNECTOR_ID_RE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._/@-]{0,127}$"
)  # no ":" (Idempotency-Key separator)


def _connector_id(value: str, notes: Notes) -> str:
    if not _CONNECTOR_ID_RE.match(value):
        raise Invalid(f"letters, digits, . _ - / @ only (max 128), got {show(value)}")
    return value


_D = Identity()

TABLE = Table("identity")
HOST_HOSTNAME = TABLE.var("HOST_HOSTNAME", text, "")  # "" = this host's name
CONNECTOR_ID = TABLE.var("CONNECTOR_ID", _connector_id, "")  # "" = from the hostname
CUSTOMER_ID = TABLE.var("CUSTOMER_ID", integer(0, 2**63 - 1), _D.customer_id)


def _hostname() -> str:
    try:
        return os.uname().nodename or "asterisk"
    except OSError:
        return "asterisk"


def _default_connector_id(hostname: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", hostname).strip("-._")[:128]
    return cleaned or "asterisk"


def load(r: Reader, tenant: str) -> Identity:
    hostname = r.get(HOST_HOSTNAME) or _hostname()
    connector_id = r.get(CONNECTOR_ID)
    return Identity(
        customer_id=r.get(CUSTOMER_ID),
        tenant=tenant,
        hostname=hostname,
        connector_id=connector_id or _default_connector_id(hostname),
        version=__version__,
    )
