"""The PBX's time zone as a value: which zone naive PBX times are read in, and how
that zone was found.

Stdlib only (config, the sources, the recordings and the pure call core use it).
A zone name is an IANA name (`America/Los_Angeles`, `UTC`) or a fixed offset
(`+05:30`, `-08:00`); `tzinfo_of(name)` is the one place that turns a name into a
tzinfo. `PbxZone.found` says where the zone came from:

* `configured`: DB_TIMEZONE set explicitly;
* `database`: the PBX database's own zone (PostgreSQL TimeZone, MySQL time_zone);
* `offset`: the database only gave a fixed UTC offset (no single IANA zone fits);
* `host`: the agent host's zone (TZ, /etc/localtime) for SQLite and the CSV/AMI feeds.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from zoneinfo import TZPATH, ZoneInfo, available_timezones

AUTO = "auto"
FOUND: tuple[str, ...] = ("configured", "database", "offset", "host")

_OFFSET_RE = re.compile(r"^(?:UTC|GMT)?([+-])(\d{1,2})(?::?(\d{2}))?$", re.I)
_UTC_NAMES = frozenset({"UTC", "ETC/UTC", "Z", "GMT", "ETC/GMT", "UCT", "ETC/UCT", "ZULU"})

# Zones an Asterisk fleet is most likely in: listed first among the suggestions.
_COMMON: tuple[str, ...] = (
    "America/New_York", "America/Chicago", "America/Denver", "America/Phoenix",
    "America/Los_Angeles", "America/Anchorage", "Pacific/Honolulu", "America/Toronto",
    "America/Vancouver", "America/Halifax", "America/St_Johns", "America/Mexico_City",
    "America/Sao_Paulo", "America/Bogota", "America/Argentina/Buenos_Aires",
    "Europe/London", "Europe/Berlin", "Europe/Paris", "Europe/Madrid", "Europe/Athens",
    "Europe/Istanbul", "Europe/Moscow", "Africa/Johannesburg", "Africa/Lagos", "Africa/Cairo",
    "Asia/Dubai", "Asia/Karachi", "Asia/Kolkata", "Asia/Kathmandu", "Asia/Dhaka",
    "Asia/Bangkok", "Asia/Jakarta", "Asia/Singapore", "Asia/Shanghai", "Asia/Hong_Kong",
    "Asia/Manila", "Asia/Tokyo", "Asia/Seoul", "Australia/Perth", "Australia/Adelaide",
    "Australia/Darwin", "Australia/Brisbane", "Australia/Sydney", "Pacific/Auckland",
)  # fmt: skip


def parse_offset(text: str) -> int | None:
    """`+05:30`, `-0800`, `+9`, `UTC-03:00` -> seconds east of UTC; None if not an offset."""
    m = _OFFSET_RE.match(text.strip())
    if not m:
        return None
    hours, minutes = int(m.group(2)), int(m.group(3) or 0)
    if hours > 15 or minutes >= 60:
        return None
    secs = hours * 3600 + minutes * 60
    return -secs if m.group(1) == "-" else secs


def offset_name(seconds: float) -> str:
    """Seconds east of UTC -> `+05:30` / `-08:00` (whole minutes)."""
    total = round(seconds / 60.0)
    sign = "-" if total < 0 else "+"
    h, m = divmod(abs(total), 60)
    return f"{sign}{h:02d}:{m:02d}"


@lru_cache(maxsize=256)
def tzinfo_of(name: str) -> tzinfo:
    """A zone name (IANA or fixed offset) -> tzinfo. ValueError when it is neither."""
    text = (name or "").strip()
    if text.upper() in _UTC_NAMES:
        return UTC
    off = parse_offset(text)
    if off is not None:
        return UTC if off == 0 else timezone(timedelta(seconds=off), offset_name(off))
    if not text or text.lower() == AUTO:
        raise ValueError(f"not a time zone: {name!r}")
    try:
        return ZoneInfo(text)
    except Exception as e:  # ZoneInfoNotFoundError, ValueError, OSError on odd names
        raise ValueError(f"unknown IANA time zone {name!r}") from e


def offset_at(name: str, at: datetime) -> int:
    """Seconds east of UTC of zone `name` at the instant `at`."""
    off = at.astimezone(tzinfo_of(name)).utcoffset()
    return int(off.total_seconds()) if off is not None else 0


def is_region_zone(name: str) -> bool:
    """An `Area/City` IANA zone (DST-aware), not a legacy abbreviation such as EST or CET."""
    return "/" in name and not name.startswith(("Etc/", "SystemV/", "posix/", "right/"))


@lru_cache(maxsize=1)
def _region_zones() -> tuple[str, ...]:
    """Canonical Area/City zones (zone.tab: no backward links such as America/Ensenada);
    every available one when no zone.tab is found."""
    names: set[str] = set()
    for path in (*(os.path.join(d, "zone.tab") for d in TZPATH), _tzdata_tab()):
        try:
            with open(path, encoding="utf-8") as fh:
                names |= {ln.split("\t")[2] for ln in fh if ln[:1] != "#" and ln.count("\t") >= 2}
        except OSError:
            continue
        break
    zones = {z.strip() for z in names} or set(available_timezones())
    return tuple(sorted(z for z in zones if is_region_zone(z)))


def _tzdata_tab() -> str:
    try:
        from importlib.resources import files

        return str(files("tzdata.zoneinfo").joinpath("zone.tab"))
    except (ImportError, ModuleNotFoundError, TypeError):
        return ""


def zones_at_offset(seconds: int, at: datetime, limit: int = 6) -> list[str]:
    """IANA `Area/City` zones whose UTC offset at `at` is `seconds` (common ones first)."""
    found: list[str] = []
    for z in (*_COMMON, *_region_zones()):
        if z in found:
            continue
        try:
            if offset_at(z, at) == seconds:
                found.append(z)
        except ValueError:
            continue
        if len(found) >= limit:
            break
    return found


def round_quarter_hour(seconds: float) -> int:
    """Round a clock skew to the 15-minute grid every UTC offset lies on."""
    return round(seconds / 900.0) * 900


@dataclass(frozen=True)
class PbxZone:
    """The zone naive PBX times are read in, and how it was found (see module doc)."""

    name: str
    found: str = "configured"
    detail: str = ""

    def __post_init__(self) -> None:
        if self.found not in FOUND:
            raise ValueError(f"PbxZone.found must be one of {FOUND}, not {self.found!r}")
        tzinfo_of(self.name)  # raises ValueError on a bad name

    @property
    def tz(self) -> tzinfo:
        return tzinfo_of(self.name)

    def local(self, naive: datetime) -> datetime:
        """A naive PBX-local time -> aware UTC."""
        return naive.replace(tzinfo=self.tz).astimezone(UTC)

    def describe(self) -> str:
        how = f"{self.found}: {self.detail}" if self.detail else self.found
        return f"{self.name} ({how})"


def configured(name: str) -> PbxZone:
    return PbxZone(name, "configured", "DB_TIMEZONE")


def host_zone(
    env: dict[str, str] | None = None,
    localtime: str = "/etc/localtime",
    timezone_file: str = "/etc/timezone",
) -> PbxZone:
    """The agent host's zone: TZ, else /etc/localtime (its zoneinfo link), else
    /etc/timezone, else the C library's current offset; UTC when nothing says."""
    env = dict(os.environ) if env is None else env
    tz_var = env.get("TZ", "").strip()
    if tz_var:
        name = tz_var.lstrip(":")
        if "zoneinfo/" in name:
            name = name.split("zoneinfo/", 1)[1]
        try:
            tzinfo_of(name)
            return PbxZone(name, "host", f"TZ={tz_var}")
        except ValueError:
            pass
    target = ""
    try:
        target = os.path.realpath(localtime) if os.path.islink(localtime) else ""
    except OSError:
        target = ""
    if "zoneinfo/" in target:
        name = target.split("zoneinfo/", 1)[1]
        try:
            tzinfo_of(name)
            return PbxZone(name, "host", f"{localtime} -> {name}")
        except ValueError:
            pass
    try:
        with open(timezone_file, encoding="utf-8") as fh:
            name = fh.read().strip()
        tzinfo_of(name)
        return PbxZone(name, "host", timezone_file)
    except (OSError, ValueError, UnicodeDecodeError):
        pass
    if os.path.exists(localtime) or tz_var:
        off = time.localtime().tm_gmtoff
        return PbxZone(offset_name(off), "host", "the host's current UTC offset (zone unnamed)")
    return PbxZone("UTC", "host", "no TZ and no /etc/localtime")


def suggest(seconds: int, at: datetime) -> str:
    """`America/Los_Angeles (or -08:00)`: the fix to print for a measured UTC offset."""
    zones = zones_at_offset(seconds, at, limit=4)
    fixed = offset_name(seconds)
    return f"{zones[0]} (or {', '.join([*zones[1:], fixed])})" if zones else fixed


# --------------------------------------------------------------------------- sanity check

FUTURE_TOLERANCE = 300.0  # rows may be this far ahead of the agent's clock (clock drift)
PAST_TOLERANCE = 1200.0  # rows read live may be this old when written (CDR batch mode: 300 s)


@dataclass(frozen=True)
class Skew:
    """Row time minus the agent's clock (negative: rows look old), and the UTC offset
    the PBX most likely writes in (the zone's offset + the skew on the 15-minute grid)."""

    seconds: float
    likely_offset: int
    at: datetime


def judge(
    zone: PbxZone, newest: datetime, now: datetime, *, live: bool, max_age: float
) -> Skew | None:
    """A wrong zone is likely when the newest row written is ahead of now by more than
    FUTURE_TOLERANCE, or, for rows read as they are written (`live`: not a backlog or
    backfill), older than min(PAST_TOLERANCE, CALL_MAX_AGE). `newest`: the newest
    time a row says it was written (CEL eventtime, CDR calldate + duration)."""
    ahead = (newest - now).total_seconds()
    if ahead > FUTURE_TOLERANCE or (live and -ahead > min(PAST_TOLERANCE, max_age)):
        return Skew(ahead, offset_at(zone.name, newest) + round_quarter_hour(ahead), now)
    return None


def _hours(seconds: float) -> str:
    return f"{abs(seconds) / 3600:.1f} h" if abs(seconds) >= 3600 else f"{abs(seconds):.0f} s"


def skew_advice(zone: PbxZone, skew: Skew) -> str:
    """One sentence: what was seen, the likely zone, and the fix."""
    seen = (
        f"PBX rows are {_hours(skew.seconds)} in the future"
        if skew.seconds > 0
        else f"PBX rows arrive {_hours(skew.seconds)} old"
    )
    head = f"{seen} read in {zone.describe()}"
    if skew.likely_offset == offset_at(zone.name, skew.at):
        return f"{head}: the zone fits, check the PBX's and this host's clocks (NTP)"
    return (
        f"{head}: the PBX probably writes UTC{offset_name(skew.likely_offset)} local time; "
        f"set DB_TIMEZONE={suggest(skew.likely_offset, skew.at)}"
    )
