"""A real, small filesystem (a tmpfs mounted as root) to run out of space on."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SmallFs:
    """A real, small filesystem: `path` is its mount point; `fill()` uses up the rest."""

    path: Path

    def free(self) -> int:
        """Bytes still available here."""
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self) -> Path:
        """Write a file here until the filesystem says ENOSPC; returns the file."""
        filler = self.path / "filler"
        with open(filler, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
        return filler


def mounted_tmpfs(mnt: Path, size: str = "8m") -> Iterator[SmallFs]:
    """Mount a tmpfs of `size` at `mnt` (an empty directory), yield it, unmount it."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], check=True)
    try:
        yield SmallFs(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
