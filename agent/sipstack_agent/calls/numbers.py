"""Phone number helpers: cleaning, dial-prefix stripping, E.164 when unambiguous.

Rules (asterisk-data.md "Numbers"):
- a leading `+` is kept; an international prefix (011, 00 ...) becomes `+`
  (no rewriting at all with ASTERISK_E164_ENABLED=false);
- a national number is expanded only with a configured default country code,
  and for NANP (country code 1) only when it has 10 digits (or 11 starting with 1)
  with a valid area code and exchange;
- dial prefixes are stripped only when that cannot eat digits of a real
  number: feature codes (`*67`, `*82`) always, a digit prefix (`9`) only when
  the number with the prefix is not already complete and the rest is.
"""

from __future__ import annotations

import re

from sipstack_agent.config import DirectionSettings

_SEPARATORS = re.compile(r"[\s\-().\u00a0/]")
_NANP10 = re.compile(r"[2-9]\d{2}[2-9]\d{6}")


def clean(raw: str) -> str:
    """Strip separators and whitespace; keep a leading `+`, digits, `*` and `#`."""
    s = _SEPARATORS.sub("", raw or "")
    if s.startswith("+"):
        return "+" + "".join(c for c in s[1:] if c.isdigit())
    return s


def is_digits(s: str) -> bool:
    return bool(s) and s.isascii() and s.isdigit()


def is_nanp(number: str) -> bool:
    """A complete NANP number: 10 digits NXX-NXX-XXXX, or 1 + that."""
    if not is_digits(number):
        return False
    if len(number) == 11 and number.startswith("1"):
        number = number[1:]
    return len(number) == 10 and bool(_NANP10.fullmatch(number))


def has_intl_prefix(number: str, settings: DirectionSettings) -> bool:
    return any(
        p and number.startswith(p) and len(number) > len(p) + 6 for p in settings.intl_prefixes
    )


def is_extension(number: str, settings: DirectionSettings) -> bool:
    """All digits with a length between ASTERISK_EXT_MIN_LENGTH and _MAX_LENGTH."""
    return is_digits(number) and settings.ext_min_length <= len(number) <= settings.ext_max_length


def is_external(number: str, settings: DirectionSettings) -> bool:
    """E.164, international prefix, or more digits than the longest extension."""
    n = clean(number)
    if n.startswith("+") and len(n) > 4:
        return True
    if not is_digits(n):
        return False
    return has_intl_prefix(n, settings) or len(n) > settings.ext_max_length


def _complete(number: str, settings: DirectionSettings) -> bool:
    """Is this, as dialled, unambiguously a whole external number?"""
    if number.startswith("+"):
        return len(number) > 4
    if has_intl_prefix(number, settings):
        return True
    return settings.default_country_code == "1" and is_nanp(number)


def strip_dial_prefix(number: str, settings: DirectionSettings) -> str:
    """Remove configured dial prefixes (STRIP_DIAL_PREFIXES) where that is safe."""
    n = clean(number)
    changed = True
    while changed:
        changed = False
        for prefix in settings.strip_dial_prefixes:
            if not prefix or not n.startswith(prefix) or len(n) == len(prefix):
                continue
            rest = n[len(prefix) :]
            if not is_digits(prefix):
                # Feature codes (*67, *82, #31#) can never be digits of a number.
                n, changed = rest, True
                break
            if _complete(n, settings):
                continue  # e.g. 9055551234: 905 is an area code, not "9" + 055...
            if _complete(rest, settings):
                n, changed = rest, True
                break
    return n


def to_e164(number: str, settings: DirectionSettings) -> str | None:
    """The E.164 form when it is unambiguous, else None."""
    n = clean(number)
    if n.startswith("+"):
        return n if 7 <= len(n) - 1 <= 15 else None
    if not is_digits(n):
        return None
    for p in sorted(settings.intl_prefixes, key=len, reverse=True):
        if p and n.startswith(p):
            rest = n[len(p) :]
            return "+" + rest if 7 <= len(rest) <= 15 and not rest.startswith("0") else None
    cc = settings.default_country_code.lstrip("+")
    if not cc:
        return None
    if cc == "1":
        if not is_nanp(n):
            return None
        return "+" + n if len(n) == 11 else "+1" + n
    # Other plans: a national number written with its trunk prefix 0.
    if n.startswith("0") and not n.startswith("00") and 8 <= len(n) <= 14:
        return "+" + cc + n[1:]
    return None


def normalize(number: str, settings: DirectionSettings) -> str:
    """Cleaned number: dial prefix stripped, E.164 when unambiguous, else as dialled.

    Extensions and short codes are returned unchanged (cleaned); with
    ASTERISK_E164_ENABLED=false (`settings.e164`) every number is, as dialled.
    """
    n = strip_dial_prefix(clean(number), settings)
    if not n or not settings.e164 or is_extension(n, settings) or not is_external(n, settings):
        return n
    return to_e164(n, settings) or n


def is_dialable(s: str) -> bool:
    """A number a caller could have dialled (not `s`, `h`, `i` or a name)."""
    n = clean(s)
    if n.startswith("+"):
        n = n[1:]
    return bool(n) and all(c.isdigit() or c in "*#" for c in n) and any(c.isdigit() for c in n)
