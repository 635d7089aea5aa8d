"""CEL `eventtime` text -> aware UTC datetime: the one time parser of the CEL feeds.

Shared by the cel_custom CSV tail (sources/cel_csv/) and the AMI feed
(sources/cel_ami.py); it knows nothing about either.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ..zones import tzinfo_of

__all__ = ["TimeParser"]


class TimeParser:
    """eventtime text -> aware UTC datetime.

    Accepts `%F %T`, `%F %T.<1..9 digits>` (3 = `%3q`, 6 as cel_pgsql/cel_custom
    write it), ISO forms with `T` and/or an offset, and `<seconds>.<fraction>`
    (epoch, UTC by definition). Naive local times are interpreted in `timezone`
    (the resolved DB_TIMEZONE: an IANA name or a fixed offset such as +05:30); in
    the repeated hour of a DST fall-back the first occurrence is taken.
    The conversion of each distinct second is cached.
    """

    _CACHE_MAX = 16384

    def __init__(self, timezone: str = "UTC") -> None:
        self.timezone = timezone or "UTC"
        self._tz = None if self.timezone.upper() in ("UTC", "Z", "ETC/UTC") else tzinfo_of(timezone)
        self._cache: dict[str, datetime] = {}  # validated "%F %T" -> its UTC instant
        self._epochs: dict[str, datetime] = {}  # validated epoch seconds -> their instant

    def __call__(self, text: str) -> datetime:
        # Fast path: a second seen before (the cache only holds validated prefixes).
        base = self._cache.get(text[:19])
        n = len(text)
        if base is not None:
            if n == 26 and text[19] == ".":
                frac = text[20:]
                if frac.isdigit() and frac.isascii():
                    return base.replace(microsecond=int(frac))
            elif n == 19:
                return base
        else:
            # Fast path: AMI's Timestamp (`%ld.%06lu`, epoch) of a second seen before.
            dot = text.find(".")
            if dot > 0 and n - dot == 7:
                base = self._epochs.get(text[:dot])
                if base is not None:
                    frac = text[dot + 1 :]
                    if frac.isdigit() and frac.isascii():
                        return base.replace(microsecond=int(frac))
        return self._parse(text)

    def _parse(self, text: str) -> datetime:
        s = text.strip()
        n = len(s)
        if n >= 19 and s[4] == "-" and s[7] == "-" and s[13] == ":":
            key = s[:19]
            base = self._cache.get(key)
            if base is None:
                base = self._second(key)
            if n == 19:
                return base
            if s[19] == "." and n > 20:
                frac = s[20:]
                if frac.isascii() and frac.isdigit() and len(frac) <= 9:
                    return base.replace(microsecond=int((frac + "00000")[:6]))
            return self._slow(s)
        if n and (s[0].isdigit() or s[0] == "-"):
            return self._epoch(s)
        raise ValueError(f"not a CEL time: {text[:40]!r}")

    def _second(self, key: str) -> datetime:
        if not (key.isascii() and key[:4].isdigit() and key[5:7].isdigit() and key[8:10].isdigit()):
            raise ValueError(f"not a CEL time: {key!r}")
        naive = datetime.fromisoformat(key)
        if self._tz is None:
            value = naive.replace(tzinfo=UTC)
        else:
            value = naive.replace(tzinfo=self._tz).astimezone(UTC)
        if len(self._cache) >= self._CACHE_MAX:
            self._cache.clear()
        self._cache[key] = value
        return value

    def _slow(self, s: str) -> datetime:
        try:
            value = datetime.fromisoformat(s)
        except ValueError:
            raise ValueError(f"not a CEL time: {s[:40]!r}") from None
        if value.tzinfo is None:
            if self._tz is None:
                return value.replace(tzinfo=UTC)
            return value.replace(tzinfo=self._tz).astimezone(UTC)
        return value.astimezone(UTC)

    def _epoch(self, s: str) -> datetime:
        sec, dot, frac = s.partition(".")
        if not (sec.lstrip("-").isascii() and sec.lstrip("-").isdigit()) or len(sec) > 12:
            raise ValueError(f"not a CEL time: {s[:40]!r}")
        if dot and not (frac.isascii() and frac.isdigit() and len(frac) <= 9):
            raise ValueError(f"not a CEL time: {s[:40]!r}")
        base = self._epochs.get(sec)
        if base is None:
            try:
                base = datetime.fromtimestamp(int(sec), UTC)
            except (OverflowError, OSError) as exc:
                raise ValueError(f"not a CEL time: {s[:40]!r}") from exc
            if len(self._epochs) >= self._CACHE_MAX:
                self._epochs.clear()
            self._epochs[sec] = base
        if frac:
            return base.replace(microsecond=int((frac + "00000")[:6]))
        return base
