"""The file side of a recording upload: confined to RECORDING_PATHS (recording_queue.FileAccess).

`ConfinedFiles.locate(path)` checks a queued path against RECORDING_PATHS
(`paths.resolve_under_roots`: traversal and outside symlinks refused) and
takes the identity of the file that will be sent; `delete_uploaded(f)`
deletes it after a 2xx only if it is still that regular file, inside the tree
(DELETE_RECORDINGS_AFTER_UPLOAD). Blocking: the uploader calls them in a thread.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Sequence

from sipstack_agent.recording_queue import LocatedFile
from sipstack_agent.recordings.paths import content_type_for, real_roots, resolve_under_roots

log = logging.getLogger("sipstack_agent.recordings")


class ConfinedFiles:
    def __init__(self, recording_paths: Sequence[str]) -> None:
        self.roots = real_roots(recording_paths)

    def locate(self, path: str) -> LocatedFile:
        res = resolve_under_roots(path, self.roots)
        if res.refused is not None:
            return LocatedFile(path, refused=res.refused)
        if not res.exists or res.real_path is None:
            return LocatedFile(path, missing="file not found")
        real = res.real_path
        try:
            st = os.stat(real)
        except OSError as exc:
            return LocatedFile(path, missing=str(exc))
        return LocatedFile(
            path,
            real_path=real,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            inode=st.st_ino,
            content_type=content_type_for(real),
        )

    def delete_uploaded(self, f: LocatedFile) -> bool:
        """Delete an uploaded file: only inside RECORDING_PATHS, only the bytes we sent."""
        real = f.real_path
        if real is None:
            return False
        res = resolve_under_roots(real, self.roots)
        if res.refused is not None or res.real_path != real:
            log.warning("not deleting %s: outside RECORDING_PATHS", real)
            return False
        try:
            st = os.lstat(real)
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode):
            return False
        if (st.st_size, st.st_mtime_ns, st.st_ino) != (f.size, f.mtime_ns, f.inode):
            log.warning("not deleting %s: it changed during the upload", real)
            return False
        try:
            os.unlink(real)
        except OSError as exc:
            log.warning("could not delete %s: %s", real, exc)
            return False
        return True
