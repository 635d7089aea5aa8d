"""Recordings: find (CEL MixMonitor, a DB table / cdr.recordingfile, the file system),
wait for stability, store on the call, queue the upload (docs/recordings.md).

The upload itself is the outbox's recording worker (shipping.RecordingShipper);
`ConfinedFiles` is its file side (RECORDING_PATHS confinement, safe deletion).
"""

from sipstack_agent.recordings.files import ConfinedFiles
from sipstack_agent.recordings.manager import RecordingManager
from sipstack_agent.recordings.paths import mixmonitor_candidates

__all__ = ["ConfinedFiles", "RecordingManager", "mixmonitor_candidates"]
