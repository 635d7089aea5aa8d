"""Tenant detection (asterisk-data.md "Tenants").

Order: the fixed TENANT, then DID_TENANT_MAP (the call's DID / dialled number),
then ACCOUNTCODE_TENANT_MAP (any row's accountcode), then the optional
pattern (one regex group) over contexts and channel names. A generic context
name (from-internal, from-pstn, default, ...) is never a tenant.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from sipstack_agent.calls import numbers
from sipstack_agent.config import TenantSettings

GENERIC_NAMES = frozenset(
    {
        "from-internal",
        "from-internal-xfer",
        "from-internal-noxfer",
        "from-internal-additional",
        "from-pstn",
        "from-trunk",
        "from-external",
        "from-did",
        "from-did-direct",
        "from-sip-external",
        "from-queue",
        "from-inbound",
        "from-outbound",
        "internal",
        "inbound",
        "outbound",
        "default",
        "public",
        "ext-local",
        "ext-queues",
        "ext-group",
        "ext-did",
        "app-blackhole",
        "macro-dial",
        "macro-dial-one",
        "local",
        "sip",
        "pjsip",
        "iax2",
        "dahdi",
        "s",
        "",
    }
)


def is_generic(name: str) -> bool:
    n = name.strip().lower()
    return n in GENERIC_NAMES or n.startswith(("macro-", "sub-", "app-", "ext-", "from-"))


@lru_cache(maxsize=16)
def _compile(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit())


def _did_matches(did: str, candidates: Iterable[str]) -> bool:
    d = _digits(did)
    if not d:
        return False
    for c in candidates:
        cd = _digits(c)
        if not cd:
            continue
        if cd == d:
            return True
        # +14155551000 vs 4155551000: same number with/without country code.
        shorter, longer = sorted((cd, d), key=len)
        if len(shorter) >= 7 and longer.endswith(shorter) and len(longer) - len(shorter) <= 3:
            return True
    return False


def reads_candidates(settings: TenantSettings, *, fixed: str = "") -> bool:
    """Whether `detect_tenant` reads its dids/accountcodes/names at all: no fixed tenant,
    and a DID map, an accountcode map or a context pattern to match them against."""
    if settings.tenant or fixed:
        return False
    return bool(settings.did_map or settings.accountcode_map or settings.context_pattern)


def detect_tenant(
    settings: TenantSettings,
    *,
    fixed: str = "",
    dids: Iterable[str] = (),
    accountcodes: Iterable[str] = (),
    names: Iterable[str] = (),
) -> tuple[str, str]:
    """(tenant, how) -- tenant may be "" (how = "none")."""
    if settings.tenant:
        return settings.tenant, "fixed"
    if fixed:
        return fixed, "fixed"
    # the candidates are only collected for a map that could use them
    if settings.did_map:
        did_list = [numbers.clean(d) for d in dids if d]
        for did, tenant in settings.did_map:
            if tenant and _did_matches(did, did_list):
                return tenant, "did"
    if settings.accountcode_map:
        codes = {c.strip() for c in accountcodes if c and c.strip()}
        for code, tenant in settings.accountcode_map:
            if tenant and code.strip() in codes:
                return tenant, "accountcode"
    if settings.context_pattern:
        rx = _compile(settings.context_pattern)
        if rx is not None:
            for name in names:
                if not name:
                    continue
                m = rx.search(name)
                if not m:
                    continue
                value = m.group(1) if rx.groups >= 1 else m.group(0)
                if value and not is_generic(value):
                    return value, "pattern"
    return "", "none"
