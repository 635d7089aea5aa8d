"""STATE_DIR: writable by the uid the agent runs as, or one clear line saying why not.

- `drop_privileges()`: started as root with PUID (and PGID) set, e.g.
  `docker run --user 0 -e PUID=1000 -e PGID=1000 ...`, the agent hands STATE_DIR
  and its own files there to PUID:PGID and goes on as that uid (what gosu or
  setpriv do, without one in the image). Started as any other uid, it runs as is:
  the image's /data is mode 1777, so `docker run --user 1000:1000` works too.
  `become_run_as()` is it with the one line saying why it failed (`run`, `check`).
- `problem()`: None when the agent can create and write its files in the
  directory, else one line naming the uid, the directory and the fix.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile

STATE_FILE = "state.db"
_STATE_FILES = (STATE_FILE, f"{STATE_FILE}-wal", f"{STATE_FILE}-shm", f"{STATE_FILE}-journal")
_OWN_DIRS = ("quarantine",)


class StateDirError(Exception):
    """STATE_DIR cannot be used; the message is one line with the fix."""


def _who() -> str:
    return f"uid {os.geteuid()} gid {os.getegid()}"


def _owner(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"owner {st.st_uid}:{st.st_gid} mode {stat.S_IMODE(st.st_mode):o}"


def _fix(path: str) -> str:
    uid, gid = os.geteuid(), os.getegid()
    return (
        f"fix: chown -R {uid}:{gid} {path} (with Docker: the volume or host directory "
        f"mounted there), or start the container as root with PUID={uid} PGID={gid}, "
        "or set STATE_DIR to a writable directory"
    )


def problem(path: str) -> str | None:
    """Why the agent cannot keep its state in `path`, or None."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        parent = os.path.dirname(os.path.abspath(path))
        return (
            f"STATE_DIR {path} cannot be created by {_who()} ({e.strerror or e}; "
            f"{parent}: {_owner(parent)}); {_fix(path)}"
        )
    if not os.path.isdir(path):
        return f"STATE_DIR {path} is not a directory; set STATE_DIR to a directory"
    try:
        fd, tmp = tempfile.mkstemp(prefix=".probe-", dir=path)
    except OSError as e:
        return (
            f"STATE_DIR {path} is not writable by {_who()} ({e.strerror or e}; "
            f"{_owner(path)}); {_fix(path)}"
        )
    os.close(fd)
    os.unlink(tmp)
    for name in _STATE_FILES:
        f = os.path.join(path, name)
        if os.path.lexists(f) and not os.access(f, os.R_OK | os.W_OK):
            return f"STATE_DIR file {f} is not writable by {_who()} ({_owner(f)}); {_fix(path)}"
    return None


def ensure_writable(path: str) -> None:
    """Raise StateDirError (one line, with the fix) unless `path` can hold the state."""
    msg = problem(path)
    if msg is not None:
        raise StateDirError(msg)


def _chown(path: str, uid: int, gid: int) -> None:
    st = os.lstat(path)
    if (st.st_uid, st.st_gid) != (uid, gid):
        os.chown(path, uid, gid, follow_symlinks=False)


def hand_over(path: str, uid: int, gid: int) -> None:
    """Give `path` and the agent's files in it (never anything else) to uid:gid."""
    os.makedirs(path, exist_ok=True)
    _chown(path, uid, gid)
    for name in _STATE_FILES:
        f = os.path.join(path, name)
        if os.path.lexists(f):
            _chown(f, uid, gid)
    for name in _OWN_DIRS:
        top = os.path.join(path, name)
        if not os.path.isdir(top) or os.path.islink(top):
            continue
        for root, dirs, files in os.walk(top):
            _chown(root, uid, gid)
            for n in dirs + files:
                with contextlib.suppress(FileNotFoundError):
                    _chown(os.path.join(root, n), uid, gid)


def drop_privileges(path: str, run_as: tuple[int, int] | None) -> bool:
    """As root with PUID/PGID: hand STATE_DIR over and become uid:gid. True if it did."""
    if run_as is None or os.geteuid() != 0:
        return False
    uid, gid = run_as
    hand_over(path, uid, gid)
    os.setgroups([gid])
    os.setgid(gid)
    os.setuid(uid)
    return True


def become_run_as(path: str, run_as: tuple[int, int] | None) -> str | None:
    """`drop_privileges`, or the one line saying why it failed (None: done or not asked)."""
    try:
        drop_privileges(path, run_as)
    except OSError as e:
        uid, gid = run_as or (0, 0)
        return (
            f"cannot start: PUID={uid} PGID={gid}: {e} (as root the agent needs CHOWN, SETUID "
            f"and SETGID to hand STATE_DIR over; or run as --user {uid}:{gid})"
        )
    return None


def run_as_warning(run_as: tuple[int, int] | None) -> str | None:
    """PUID/PGID only act when the agent starts as root; say so when they differ."""
    if run_as is None or os.geteuid() == 0:
        return None
    if run_as == (os.geteuid(), os.getegid()):
        return None
    return (
        f"PUID/PGID ({run_as[0]}:{run_as[1]}) ignored: started as {_who()}, not root; "
        f"use docker run --user {run_as[0]}:{run_as[1]} (or start as root with PUID/PGID)"
    )
