"""Identity: which file is this?

A file is its (device, inode) while it lives, and the fingerprint of its first
bytes (`Head`) when it is rewritten in place: copytruncate keeps the inode
but, once the copy is truncated and written again, not the first bytes. After
a rename the (device, inode) finds the old file again in its directory; after
copytruncate the fingerprint finds the copy.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass

__all__ = [
    "HEAD_BYTES",
    "FileId",
    "Head",
    "find_by_inode",
    "find_copy",
    "grown_head",
    "rewritten",
    "stat_path",
]

HEAD_BYTES = 128  # fingerprint of the file start: detects copytruncate even when it regrew

_COMPRESSED = (".gz", ".bz2", ".xz", ".zst")


@dataclass(frozen=True, slots=True)
class FileId:
    """(device, inode): the file while it exists, whatever its name."""

    dev: int
    ino: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileId:
        return cls(st.st_dev, st.st_ino)


@dataclass(frozen=True, slots=True)
class Head:
    """Fingerprint of the first `length` bytes of a file (length 0: none taken yet)."""

    length: int = 0
    digest: str = ""

    @classmethod
    def of(cls, data: bytes) -> Head:
        return cls(len(data), _digest(data))

    def matches(self, data: bytes) -> bool:
        return len(data) >= self.length and _digest(data[: self.length]) == self.digest


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def stat_path(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def rewritten(fd: int, offset: int, head: Head) -> bool:
    """The open file shrank below `offset`, or its first bytes are no longer `head`."""
    if os.fstat(fd).st_size < offset:
        return True
    if head.length:
        data = os.pread(fd, head.length, 0)
        if len(data) < head.length or not head.matches(data):
            return True
    return False


def grown_head(fd: int, offset: int, head: Head) -> Head | None:
    """A longer fingerprint once more than `head.length` bytes were read (up to HEAD_BYTES)."""
    if head.length < HEAD_BYTES and offset > head.length:
        return Head.of(os.pread(fd, min(HEAD_BYTES, offset), 0))
    return None


def find_by_inode(directory: str, fid: FileId) -> str | None:
    """The file in `directory` with this (device, inode): a renamed rotation of ours."""
    try:
        with os.scandir(directory) as it:
            for entry in it:
                try:
                    if (
                        entry.inode() == fid.ino
                        and entry.stat(follow_symlinks=False).st_dev == fid.dev
                    ):
                        return entry.path
                except OSError:
                    continue
    except OSError:
        return None
    return None


def find_copy(path: str, head: Head, min_size: int, exclude: FileId) -> str | None:
    """A copy of our file made by copytruncate: same first bytes, at least `min_size` long.

    Candidates are the uncompressed files beside it whose name starts with its
    name (Master.csv.1, Master.csv-20261124); the newest one wins.
    """
    directory = os.path.dirname(path) or "."
    base = os.path.basename(path)
    best: tuple[float, str] | None = None
    try:
        with os.scandir(directory) as it:
            for entry in it:
                name = entry.name
                if name == base or not name.startswith(base) or name.endswith(_COMPRESSED):
                    continue
                try:
                    st = entry.stat()
                    if FileId.of(st) == exclude or not stat.S_ISREG(st.st_mode):
                        continue
                    if st.st_size < min_size:
                        continue
                    with open(entry.path, "rb") as fh:
                        if not head.matches(fh.read(head.length)):
                            continue
                except OSError:
                    continue
                if best is None or st.st_mtime > best[0]:
                    best = (st.st_mtime, entry.path)
    except OSError:
        return None
    return best[1] if best else None
