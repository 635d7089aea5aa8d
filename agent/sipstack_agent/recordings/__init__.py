"""Recordings: find (CEL MixMonitor, a DB table / cdr.recordingfile, the file system),
wait for stability, store on the call, upload (docs/recordings.md)."""

from sipstack_agent.recordings.manager import RecordingManager
from sipstack_agent.recordings.paths import mixmonitor_candidates
from sipstack_agent.recordings.upload import RecordingUploader

__all__ = ["RecordingManager", "RecordingUploader", "mixmonitor_candidates"]
