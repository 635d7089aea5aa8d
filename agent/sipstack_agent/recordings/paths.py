"""Recording path rules: where a recording may live and which call a name belongs to.

Everything here is synchronous and small. The string functions
(`mixmonitor_candidates`, `ids_in_name`, `name_matches_id`,
`content_type_for`) touch no file system; `resolve_under_roots` and
`first_existing` call `os.path.realpath` / `os.stat` and nothing else.

Safety rule: a recording path is used (stat, upload, delete) only when its
*real* path (symlinks resolved, `..` collapsed) lies inside the real path of
one of RECORDING_PATHS. Paths that leave the tree are refused with a reason;
the caller counts them in `sipstack_recording_paths_refused_total`.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sipstack_agent.rules.mixmonitor import appdata_file, appdata_path
from sipstack_agent.zones import tzinfo_of

CONTENT_TYPES: dict[str, str] = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "gsm": "audio/gsm",
    "ogg": "audio/ogg",
}

# Refusal reasons (stable strings: logged and documented).
REFUSED_TRAVERSAL = "traversal"  # a `..` component leads outside RECORDING_PATHS
REFUSED_SYMLINK = "symlink_outside"  # a symlink inside the tree points outside it
REFUSED_OUTSIDE = "outside_recording_paths"  # an absolute path elsewhere on the host
REFUSED_NOT_FILE = "not_a_file"  # a directory, device, fifo ...

# A uniqueid as Asterisk writes it: <epoch seconds>.<sequence>, optionally after a
# system name (`pbx1-1795495160.12`). Boundaries: no digit or dot on either side,
# so 1795495160.1 never matches 1795495160.10 or 11795495160.1.
_ID_TOKEN = re.compile(r"(?<![0-9.])([0-9]{6,}\.[0-9]+)(?![0-9]|\.[0-9])")
_ID_TAIL = re.compile(r"([0-9]{6,}\.[0-9]+)$")


def has_known_extension(name: str, extensions: Sequence[str]) -> bool:
    """True when `name` ends in `.<ext>` for one of `extensions` (case-insensitive).

    `in-...-1795495160.0` has the suffix `.0`, which is not an extension.
    """
    base = posixpath.basename(name)
    if "." not in base:
        return False
    ext = base.rsplit(".", 1)[1].lower()
    return any(ext == e.lower() for e in extensions)


def mixmonitor_candidates(
    appdata: str, recording_paths: Sequence[str], extensions: Sequence[str]
) -> list[str]:
    """The file paths a MixMonitor appdata may name, in probing order.

    - the file is the first comma-separated token of appdata;
    - a relative name resolves under the first RECORDING_PATHS entry (Asterisk's
      monitor directory);
    - a name without a known extension is probed as `name.<ext>` for each of
      RECORDING_FILE_EXTENSIONS in order, then as the bare name.

    Pure: the paths are not checked (use `first_existing`). An empty appdata,
    or a relative one with no RECORDING_PATHS, gives [].
    """
    base = appdata_path(appdata, recording_paths[0] if recording_paths else "")
    if not base:
        return []
    if has_known_extension(base, extensions):
        return [base]
    out = [f"{base}.{ext}" for ext in extensions if ext]
    out.append(base)
    return list(dict.fromkeys(out))


def recordingfile_candidates(
    value: str,
    recording_paths: Sequence[str],
    extensions: Sequence[str],
    call_dates: Iterable[date] = (),
) -> list[str]:
    """Candidates for a FreePBX `cdr.recordingfile` (or a recordings-table file name).

    FreePBX stores only the base name and writes the file under
    `monitor/YYYY/MM/DD/` of the call's (PBX-local) date; older versions and
    other dialplans put it directly in the monitor directory or store a full path.
    """
    token = appdata_file(value)
    if not token:
        return []
    if posixpath.isabs(token) or not recording_paths:
        return mixmonitor_candidates(token, recording_paths, extensions)
    out: list[str] = []
    for d in call_dates:
        dated = posixpath.join(f"{d.year:04d}", f"{d.month:02d}", f"{d.day:02d}", token)
        out.extend(mixmonitor_candidates(dated, recording_paths, extensions))
    out.extend(mixmonitor_candidates(token, recording_paths, extensions))
    return list(dict.fromkeys(out))


def local_dates(at: datetime, tz_name: str = "UTC") -> list[date]:
    """The PBX-local date of `at` and its neighbours (a call near midnight, clock skew)."""
    try:
        local = at.astimezone(tzinfo_of(tz_name)) if at.tzinfo else at
    except ValueError:
        local = at
    d = local.date()
    return [d, d - timedelta(days=1), d + timedelta(days=1)]


def id_tail(call_id: str) -> str:
    """The `<epoch>.<seq>` part of a uniqueid/linkedid ('' when it has none)."""
    m = _ID_TAIL.search(call_id)
    return m.group(1) if m else ""


def ids_in_name(name: str) -> list[str]:
    """Every uniqueid-shaped token of a file name, e.g. FreePBX's
    `in-4155551000-4085551234-20261124-043920-1795495160.0.wav` -> ['1795495160.0']."""
    return _ID_TOKEN.findall(name)


def name_matches_id(name: str, call_id: str) -> bool:
    """True when `call_id` appears in `name` as a whole token.

    1795495160.1 matches `...-1795495160.1.wav` and `1795495160.1-in.wav` but not
    `...-1795495160.10.wav` nor `...-11795495160.1.wav`.
    """
    if not call_id:
        return False
    pattern = r"(?<![0-9A-Za-z.])" + re.escape(call_id) + r"(?![0-9]|\.[0-9])"
    return re.search(pattern, name) is not None


def content_type_for(path: str) -> str:
    ext = posixpath.basename(path).rsplit(".", 1)[-1].lower() if "." in path else ""
    return CONTENT_TYPES.get(ext, "application/octet-stream")


def _inside(real: str, root: str) -> bool:
    if real == root:
        return False  # the root itself is a directory, never a recording
    try:
        return os.path.commonpath([real, root]) == root
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Resolved:
    """Outcome of checking one path against RECORDING_PATHS."""

    path: str  # the path as given
    real_path: str | None  # realpath when it is allowed
    exists: bool
    refused: str | None = None  # reason when it is outside the tree

    @property
    def ok(self) -> bool:
        return self.refused is None and self.real_path is not None and self.exists


def real_roots(recording_paths: Sequence[str]) -> tuple[str, ...]:
    return tuple(os.path.realpath(p) for p in recording_paths if p)


def resolve_under_roots(path: str, roots: Sequence[str]) -> Resolved:
    """Check `path` against the (already realpath'ed) `roots`.

    Refused when its real path is outside every root; the reason says whether
    a `..` component, a symlink or a plain foreign path got it there. A path
    inside the tree that does not exist (yet) is not refused: `exists` is False.
    """
    absolute = os.path.abspath(path)
    real = os.path.realpath(absolute)
    if any(_inside(real, r) for r in roots):
        exists = os.path.exists(real)
        if exists and not os.path.isfile(real):
            return Resolved(path, None, True, REFUSED_NOT_FILE)
        return Resolved(path, real, exists)
    exists = os.path.lexists(absolute)
    if any(_inside(os.path.normpath(absolute), r) for r in roots):
        reason = REFUSED_SYMLINK  # lexically inside, really outside
    elif ".." in path.replace("\\", "/").split("/"):
        reason = REFUSED_TRAVERSAL
    else:
        reason = REFUSED_OUTSIDE
    return Resolved(path, None, exists, reason)


def first_existing(
    candidates: Sequence[str], roots: Sequence[str]
) -> tuple[Resolved | None, list[Resolved]]:
    """The first candidate that exists inside the tree, and every refused one."""
    refused: list[Resolved] = []
    for c in candidates:
        r = resolve_under_roots(c, roots)
        if r.refused is not None:
            if r.exists or r.refused == REFUSED_TRAVERSAL:
                refused.append(r)
            continue
        if r.exists:
            return r, refused
    return None, refused


def freepbx_day_dirs(root: str, days: Iterable[date]) -> list[str]:
    """`root/YYYY/MM/DD` for each day (FreePBX's monitor layout)."""
    return [posixpath.join(root, f"{d.year:04d}", f"{d.month:02d}", f"{d.day:02d}") for d in days]
