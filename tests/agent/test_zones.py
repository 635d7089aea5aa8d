"""zones.py: zone names, the agent host's zone, and the clock sanity check (pure)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sipstack_agent.zones import (
    PbxZone,
    host_zone,
    judge,
    offset_name,
    parse_offset,
    skew_advice,
    tzinfo_of,
    zones_at_offset,
)

WINTER = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SUMMER = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("+05:30", 19800), ("-08:00", -28800), ("+0545", 20700), ("+9", 32400),
     ("UTC-03:00", -10800), ("America/Toronto", None), ("+25:00", None), ("", None)],
)  # fmt: skip
def test_parse_offset(text: str, seconds: int | None) -> None:
    assert parse_offset(text) == seconds


def test_tzinfo_of_names_offsets_and_refusals() -> None:
    assert tzinfo_of("UTC") is UTC and tzinfo_of("Etc/UTC") is UTC
    assert tzinfo_of("+05:30").utcoffset(None) == timedelta(hours=5, minutes=30)
    la = tzinfo_of("America/Los_Angeles")
    assert WINTER.astimezone(la).utcoffset() == timedelta(hours=-8)
    assert SUMMER.astimezone(la).utcoffset() == timedelta(hours=-7)
    for bad in ("auto", "Mars/Olympus", "", "+99:00"):
        with pytest.raises(ValueError):
            tzinfo_of(bad)
    with pytest.raises(ValueError):
        PbxZone("UTC", "guessed")
    assert offset_name(-28800) == "-08:00" and offset_name(20700) == "+05:45"


def test_zones_at_offset_lists_common_zones_first_and_follows_dst() -> None:
    assert zones_at_offset(-8 * 3600, WINTER)[0] == "America/Los_Angeles"
    assert "America/Los_Angeles" not in zones_at_offset(-8 * 3600, SUMMER)
    assert zones_at_offset(-7 * 3600, SUMMER)[:2] == ["America/Phoenix", "America/Los_Angeles"]
    assert "Asia/Tokyo" in zones_at_offset(9 * 3600, WINTER)
    assert zones_at_offset(19800, WINTER)[0] == "Asia/Kolkata"
    assert zones_at_offset(37800, WINTER)[0] == "Australia/Adelaide"  # +10:30 in its summer
    assert zones_at_offset(13 * 3600 + 1, WINTER) == []


def test_host_zone_from_tz_localtime_link_timezone_file_or_nothing(tmp_path: Path) -> None:
    none = str(tmp_path / "none")
    z = host_zone({"TZ": ":Europe/Berlin"}, localtime=none, timezone_file=none)
    assert (z.name, z.found, z.detail) == ("Europe/Berlin", "host", "TZ=:Europe/Berlin")
    link = tmp_path / "localtime"
    target = Path("/usr/share/zoneinfo/Asia/Kolkata")
    if not target.exists():
        pytest.skip("no system zoneinfo")
    os.symlink(target, link)
    z = host_zone({}, localtime=str(link), timezone_file=none)
    assert z.name == "Asia/Kolkata" and "localtime" in z.detail
    tzfile = tmp_path / "timezone"
    tzfile.write_text("Australia/Adelaide\n")
    assert host_zone({}, localtime=none, timezone_file=str(tzfile)).name == "Australia/Adelaide"
    z = host_zone({}, localtime=none, timezone_file=none)
    assert (z.name, z.detail) == ("UTC", "no TZ and no /etc/localtime")


def test_rows_in_the_future_are_judged_even_in_a_backlog() -> None:
    utc = PbxZone("UTC", "configured", "DB_TIMEZONE")
    tokyo_as_utc = WINTER + timedelta(hours=9, seconds=-4)  # a row written 4 s ago in Tokyo
    skew = judge(utc, tokyo_as_utc, WINTER, live=False, max_age=6 * 3600)
    assert skew is not None and skew.likely_offset == 9 * 3600
    text = skew_advice(utc, skew)
    assert "9.0 h in the future" in text and "UTC+09:00" in text
    assert "set DB_TIMEZONE=Asia/Tokyo (or" in text and "+09:00)" in text
    assert judge(utc, WINTER + timedelta(seconds=200), WINTER, live=False, max_age=60) is None


def test_old_rows_are_judged_only_when_they_arrive_live() -> None:
    utc = PbxZone("UTC", "database", "PostgreSQL TimeZone")
    la_as_utc = WINTER - timedelta(hours=8, seconds=3)
    assert judge(utc, la_as_utc, WINTER, live=False, max_age=6 * 3600) is None  # a backfill
    skew = judge(utc, la_as_utc, WINTER, live=True, max_age=6 * 3600)
    assert skew is not None and skew.likely_offset == -8 * 3600
    assert "set DB_TIMEZONE=America/Los_Angeles" in skew_advice(utc, skew)
    # half-hour zones and a zone read in the wrong one of two DST-aware zones
    kolkata_as_utc = WINTER + timedelta(hours=5, minutes=30)
    assert judge(utc, kolkata_as_utc, WINTER, live=True, max_age=6 * 3600).likely_offset == 19800  # type: ignore[union-attr]
    toronto = PbxZone("America/Toronto", "configured")
    la_as_toronto = WINTER - timedelta(hours=3)
    skew = judge(toronto, la_as_toronto, WINTER, live=True, max_age=6 * 3600)
    assert skew is not None and "America/Los_Angeles" in skew_advice(toronto, skew)


def test_a_small_skew_of_live_rows_is_the_clock_not_the_zone() -> None:
    zone = PbxZone("Europe/Berlin", "database")
    assert judge(zone, WINTER - timedelta(minutes=8), WINTER, live=True, max_age=3600) is None
    skew = judge(zone, WINTER + timedelta(minutes=6), WINTER, live=True, max_age=3600)
    assert skew is not None and "check the PBX's and this host's clocks" in skew_advice(zone, skew)
