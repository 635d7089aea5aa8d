"""MixMonitor appdata -> the recording's path (the documents and the uploader agree).

Asterisk writes a relative MixMonitor file name under its monitor directory:
the first RECORDING_PATHS entry (config passes it as `CallSettings.monitor_dir`
and `RecordingSettings.paths[0]`). Quotes around the file name are dialplan
syntax, not part of the name.
"""

from __future__ import annotations

import posixpath

MONITOR_DIR = "/var/spool/asterisk/monitor"  # Asterisk's default astspooldir/monitor


def appdata_file(appdata: str) -> str:
    """The file token of a MixMonitor appdata: `file[,options[,command]]` -> `file`, unquoted."""
    return (appdata or "").split(",", 1)[0].strip().strip('"').strip()


def appdata_path(appdata: str, monitor_dir: str) -> str:
    """The path a MixMonitor appdata names: absolute as given, relative under `monitor_dir`.

    "" for an empty file token, or a relative one without a monitor directory.
    """
    token = appdata_file(appdata)
    if not token or posixpath.isabs(token):
        return token
    return posixpath.join(monitor_dir, token) if monitor_dir else ""
