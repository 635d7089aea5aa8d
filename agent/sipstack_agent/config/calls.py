"""The call core's section: direction rules (`DirectionSettings`), tenants
(`TenantSettings`) and completion / shipping phases (`CallSettings`)."""

from __future__ import annotations

import json
import re

from .reader import Reader
from .spec import (
    TENANT_MAP_FILE,
    TRUE,
    Invalid,
    Notes,
    Table,
    boolean,
    choice,
    integer,
    items,
    seconds,
    show,
    text,
)
from .types import CallSettings, DirectionSettings, TenantSettings

SHIPPING_MODES: tuple[str, ...] = ("complete", "progressive")
_BOOL_WORDS = frozenset({"true", "yes", "on", "false", "no", "off"})  # not digits: 0, 1 dial


def _intl_prefixes(value: str, notes: Notes) -> tuple[str, ...]:
    out: list[str] = []
    for p in items(value, notes):
        if p == "+":
            continue  # "+" is always international
        if not p.isascii() or not p.isdigit() or len(p) > 6:
            notes.problem(f"entries must be digits like 011,00; got {show(p)}")
        else:
            out.append(p)
    return tuple(out)


def _country_code(value: str, notes: Notes) -> str:
    cc = value.lstrip("+")
    if cc and (not cc.isascii() or not cc.isdigit() or len(cc) > 3):
        raise Invalid(f"1 to 3 digits expected (e.g. 1, 44), got {show(cc)}")
    return cc


def _dial_prefixes(value: str, notes: Notes) -> tuple[str, ...]:
    entries = items(value, notes)
    if len(entries) == 1 and entries[0].lower() in _BOOL_WORDS:
        # The old .env.example's STRIP_DIAL_PREFIXES=true named no prefix: none was stripped.
        if entries[0].lower() in TRUE:
            notes.warning(
                f"{show(entries[0])} names no prefix, so none is stripped "
                "(as by the old connector); list them, e.g. *67,*82"
            )
        return ()
    out: list[str] = []
    for p in entries:
        if not re.fullmatch(r"[0-9*#+]{1,8}", p):
            notes.problem(f"entries must be dial prefixes like *67,*82,9; got {show(p)}")
        else:
            out.append(p)
    return tuple(out)


def _context_pattern(value: str, notes: Notes) -> str:
    try:
        if re.compile(value).groups < 1:
            raise Invalid("needs one capturing group, e.g. ^from-(\\w+)-")
    except (re.error, RecursionError, OverflowError):
        raise Invalid(f"not a valid regular expression: {show(value)}") from None
    return value


def _json_pairs(value: str) -> tuple[tuple[str, str], ...]:
    try:
        obj = json.loads(value)
    except ValueError:
        raise Invalid("looks like JSON but does not parse; use key:tenant,key2:tenant2") from None
    if not isinstance(obj, dict) or not all(
        isinstance(v, str | int) and not isinstance(v, bool) for v in obj.values()
    ):
        raise Invalid("JSON must be an object of key -> tenant strings")
    return tuple(
        (str(k).strip(), str(v).strip())
        for k, v in obj.items()
        if str(k).strip() and str(v).strip()
    )


def _pairs(value: str, notes: Notes) -> tuple[tuple[str, str], ...]:
    """`key:value,key2:value2` or a JSON object."""
    if value.startswith("{"):
        return _json_pairs(value)
    out: list[tuple[str, str]] = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        k, sep, v = item.partition(":")
        if not sep or not k.strip() or not v.strip():
            notes.problem(f"entries must look like key:tenant, got {show(item)}")
            continue
        out.append((k.strip(), v.strip()))
    return tuple(out)


_DIRECTION = DirectionSettings()
_TENANTS = TenantSettings()
_CALLS = CallSettings()

TABLE = Table("calls")
ASTERISK_EXT_MIN_LENGTH = TABLE.var(
    "ASTERISK_EXT_MIN_LENGTH", integer(1, 20), _DIRECTION.ext_min_length
)
ASTERISK_EXT_MAX_LENGTH = TABLE.var(
    "ASTERISK_EXT_MAX_LENGTH", integer(1, 20), _DIRECTION.ext_max_length
)
ASTERISK_INTL_PREFIXES = TABLE.var(
    "ASTERISK_INTL_PREFIXES", _intl_prefixes, _DIRECTION.intl_prefixes
)
DEFAULT_COUNTRY_CODE = TABLE.var(
    "DEFAULT_COUNTRY_CODE", _country_code, _DIRECTION.default_country_code
)
STRIP_DIAL_PREFIXES = TABLE.var(
    "STRIP_DIAL_PREFIXES", _dial_prefixes, _DIRECTION.strip_dial_prefixes
)
KNOWN_TRUNKS = TABLE.var("KNOWN_TRUNKS", items, _DIRECTION.known_trunks)
ASTERISK_E164_ENABLED = TABLE.var("ASTERISK_E164_ENABLED", boolean, _DIRECTION.e164)
TENANT_CONTEXT_PATTERN = TABLE.var(
    "TENANT_CONTEXT_PATTERN", _context_pattern, _TENANTS.context_pattern
)
TENANT = TABLE.var("TENANT", text, _TENANTS.tenant)
DID_TENANT_MAP = TABLE.var("DID_TENANT_MAP", _pairs, _TENANTS.did_map, file=TENANT_MAP_FILE)
ACCOUNTCODE_TENANT_MAP = TABLE.var(
    "ACCOUNTCODE_TENANT_MAP", _pairs, _TENANTS.accountcode_map, file=TENANT_MAP_FILE
)
CALL_IDLE_TIMEOUT = TABLE.var("CALL_IDLE_TIMEOUT", seconds(hi=86400), _CALLS.idle_timeout)
CALL_MAX_AGE = TABLE.var("CALL_MAX_AGE", seconds(hi=30 * 86400), _CALLS.max_age)
CALL_SHIPPING_MODE = TABLE.var("CALL_SHIPPING_MODE", choice(SHIPPING_MODES), _CALLS.shipping_mode)
_PHASE = seconds(hi=86400, lo_inclusive=True)
SHIP_COMPLETE_AFTER = TABLE.var("SHIP_COMPLETE_AFTER", _PHASE, _CALLS.ship_complete_after)
# The old SHIP_INCOMPLETE_AFTER: when a call still running is shipped (docs/migration.md):
# the alias of LONG_CALL_UPDATE_INTERVAL in complete mode, of SHIP_UPDATE_MIN_INTERVAL in
# progressive mode.
LONG_CALL_UPDATE_INTERVAL = TABLE.var(
    "LONG_CALL_UPDATE_INTERVAL", _PHASE, _CALLS.long_call_update_interval, "SHIP_INCOMPLETE_AFTER"
)
SHIP_UPDATE_MIN_INTERVAL = TABLE.var(
    "SHIP_UPDATE_MIN_INTERVAL", _PHASE, _CALLS.ship_update_min_interval, "SHIP_INCOMPLETE_AFTER"
)


def _direction(r: Reader) -> DirectionSettings:
    ext_min = r.get(ASTERISK_EXT_MIN_LENGTH)
    ext_max = r.get(ASTERISK_EXT_MAX_LENGTH)
    if ext_min > ext_max:
        r.bad(
            ASTERISK_EXT_MIN_LENGTH.name,
            f"({ext_min}) must not exceed {ASTERISK_EXT_MAX_LENGTH.name} ({ext_max})",
        )
    return DirectionSettings(
        ext_min_length=ext_min,
        ext_max_length=ext_max,
        intl_prefixes=r.get(ASTERISK_INTL_PREFIXES),
        default_country_code=r.get(DEFAULT_COUNTRY_CODE),
        strip_dial_prefixes=r.get(STRIP_DIAL_PREFIXES),
        known_trunks=r.get(KNOWN_TRUNKS),
        e164=r.get(ASTERISK_E164_ENABLED),
    )


def _tenants(r: Reader) -> TenantSettings:
    pattern = r.get(TENANT_CONTEXT_PATTERN)
    return TenantSettings(
        tenant=r.get(TENANT),
        did_map=r.get(DID_TENANT_MAP),
        accountcode_map=r.get(ACCOUNTCODE_TENANT_MAP),
        context_pattern=pattern,
    )


def load(r: Reader, cel_mode: str, timezone: str) -> CallSettings:
    """The call section; `timezone` is DB_TIMEZONE (reported in documents)."""
    direction = _direction(r)
    tenants = _tenants(r)
    idle = r.get(CALL_IDLE_TIMEOUT)
    max_age = r.get(CALL_MAX_AGE)
    if max_age <= idle:
        r.bad(
            CALL_MAX_AGE.name,
            f"({max_age:g} s) must exceed {CALL_IDLE_TIMEOUT.name} ({idle:g} s)",
        )
    shipping_mode = r.get(CALL_SHIPPING_MODE)
    progressive = shipping_mode == "progressive"
    settle = r.get(SHIP_COMPLETE_AFTER)
    if settle >= max_age:
        r.bad(
            SHIP_COMPLETE_AFTER.name,
            f"({settle:g} s) must be below {CALL_MAX_AGE.name} ({max_age:g} s)",
        )
        settle = 0.0
    long_call = (
        LONG_CALL_UPDATE_INTERVAL.without_aliases() if progressive else LONG_CALL_UPDATE_INTERVAL
    )
    min_interval = (
        SHIP_UPDATE_MIN_INTERVAL if progressive else SHIP_UPDATE_MIN_INTERVAL.without_aliases()
    )
    return CallSettings(
        idle_timeout=idle,
        max_age=max_age,
        shipping_mode=shipping_mode,
        long_call_update_interval=r.get(long_call),
        ship_update_min_interval=r.get(min_interval),
        ship_complete_after=settle,
        cdr_only=cel_mode == "none",
        timezone=timezone,
        direction=direction,
        tenants=tenants,
    )
