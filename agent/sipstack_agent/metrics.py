"""Prometheus metrics of the agent, one registry per process (tests make their own).

Every stage receives the `Metrics` object; nothing uses prometheus_client's
global registry, so several agents can run in one test process.

Names: the six metrics of the old connector's README keep their names (see
OLD_NAMES); every other one starts with ``sipstack_``. The dead-letter label
sets of DEAD_LETTER_REASONS exist at 0 from start-up, so an alert on
``increase(sipstack_dead_letters_total[10m]) > 0`` sees the very first one.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sipstack_agent import __version__

# Metric names of the old connector, kept so existing dashboards keep working.
OLD_NAMES = frozenset(
    {
        "database_connection_status",
        "cdrs_processed",
        "cels_processed",
        "calls_shipped",
        "recordings_detected",
        "api_request_duration_seconds",
    }
)
PREFIX = "sipstack_"
# Dead-letter reasons that need no API answer, per outbox kind (shipping/outbox.py
# ships kind "call", shipping/recordings.py kind "recording"). `http_<status>` sets
# appear with their first dead letter; the chart's alert catches new series too.
DEAD_LETTER_REASONS: Mapping[str, tuple[str, ...]] = {
    "call": ("invalid_payload", "retry_horizon"),
    "recording": ("file_missing", "path_refused", "retry_horizon"),
}


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.build_info = Gauge(
            "sipstack_build_info",
            "Always 1; the agent's version and Python version as labels",
            ["version", "python"],
            registry=r,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        # The six names of the old connector's README.
        self.database_connection_status = Gauge(
            "database_connection_status",
            "1 when the PBX database (or CEL feed) is reachable, else 0",
            ["source"],
            registry=r,
        )
        self.cdrs_processed = Counter(
            "cdrs_processed", "CDR rows read and stored locally", registry=r
        )  # exposed as cdrs_processed_total
        self.cels_processed = Counter(
            "cels_processed", "CEL rows read and stored locally", ["source"], registry=r
        )
        self.calls_shipped = Counter(
            "calls_shipped", "Call documents accepted by the API", ["phase"], registry=r
        )
        self.recordings_detected = Counter(
            "recordings_detected", "Recording files linked to calls", ["source"], registry=r
        )
        self.api_request_duration_seconds = Histogram(
            "api_request_duration_seconds",
            "Duration of requests to the SIPSTACK API",
            ["kind", "outcome"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        # Added by this project.
        self.outbox_depth = Gauge(
            "sipstack_outbox_depth", "Documents waiting for delivery", ["kind"], registry=r
        )
        self.oldest_undelivered_seconds = Gauge(
            "sipstack_oldest_undelivered_seconds",
            "Age of the oldest document not yet accepted by the API",
            registry=r,
        )
        self.checkpoint_lag_rows = Gauge(
            "sipstack_checkpoint_lag_rows",
            "Rows in the source table beyond the read checkpoint",
            ["table"],
            registry=r,
        )
        self.checkpoint_lag_seconds = Gauge(
            "sipstack_checkpoint_lag_seconds",
            "Age of the newest row read from each table",
            ["table"],
            registry=r,
        )
        self.dead_letters = Counter(
            "sipstack_dead_letters", "Documents given up on", ["kind", "reason"], registry=r
        )
        for kind, reasons in DEAD_LETTER_REASONS.items():
            for reason in reasons:
                self.dead_letters.labels(kind, reason)
        self.dead_letters_stored = Gauge(
            "sipstack_dead_letters_stored", "Documents in the dead-letter store", registry=r
        )
        self.rows_discarded = Counter(
            "sipstack_rows_discarded", "Source rows not used, by reason", ["reason"], registry=r
        )
        self.api_retries = Counter(
            "sipstack_api_retries", "Retryable API failures", ["kind", "reason"], registry=r
        )
        self.api_auth_failed = Gauge(
            "sipstack_api_auth_failed", "1 while the API rejects the key (401/403)", registry=r
        )
        self.open_calls = Gauge("sipstack_open_calls", "Calls not yet complete", registry=r)
        self.calls_completed = Counter(
            "sipstack_calls_completed", "Calls completed, by reason", ["reason"], registry=r
        )
        self.linkedid_end_seen = Gauge(
            "sipstack_linkedid_end_seen",
            "1 when LINKEDID_END rows are seen in CEL (else the idle timeout completes calls)",
            registry=r,
        )
        self.id_regressions = Counter(
            "sipstack_id_regressions",
            "Times a table's max id went down (truncate/restore) and the reader re-anchored",
            ["table"],
            registry=r,
        )
        self.id_holes_dropped = Counter(
            "sipstack_id_holes_dropped",
            "Ids skipped by out-of-order commits that never appeared: given up after 60 s "
            "(reason=timeout) or below the overlap window (reason=window)",
            ["table", "reason"],
            registry=r,
        )
        self.db_reconnects = Counter(
            "sipstack_db_reconnects", "Database reconnect attempts", ["source"], registry=r
        )
        # The PBX's time zone (DB_TIMEZONE) and the clock sanity check.
        self.pbx_timezone = Gauge(
            "sipstack_pbx_timezone",
            "1 for the zone PBX times are read in (found: configured, database, offset, host)",
            ["zone", "found"],
            registry=r,
        )
        self.clock_skew = Gauge(
            "sipstack_clock_skew_seconds",
            "Newest row time minus the agent's clock on rows read live (negative: rows look old)",
            ["table"],
            registry=r,
        )
        self.timezone_suspect = Gauge(
            "sipstack_timezone_suspect",
            "1 while row times disagree with the clock by more than a clock error explains",
            ["table"],
            registry=r,
        )
        # CEL feeds without a table.
        self.csv_quarantined = Counter(
            "sipstack_csv_lines_quarantined", "Malformed cel_custom lines kept aside", registry=r
        )
        self.ami_connected = Gauge(
            "sipstack_ami_connected", "1 while logged in to the AMI", registry=r
        )
        self.csv_rotations = Counter(
            "sipstack_csv_rotations",
            "cel_custom file rotations seen (rename = rename-and-create, truncate = copytruncate"
            " or shrink, lost = rotated file gone before it was drained)",
            ["kind"],
            registry=r,
        )
        self.ami_gaps = Counter(
            "sipstack_ami_gaps",
            "AMI disconnections (or agent restarts) during which CEL events may have been missed",
            registry=r,
        )
        # Recordings.
        self.recordings_uploaded = Counter(
            "sipstack_recordings_uploaded", "Recording files accepted by the API", registry=r
        )
        self.recording_upload_bytes = Counter(
            "sipstack_recording_upload_bytes", "Bytes of recording audio uploaded", registry=r
        )
        self.recording_upload_failures = Counter(
            "sipstack_recording_upload_failures",
            "Recording upload failures",
            ["reason"],
            registry=r,
        )
        self.recordings_pending = Gauge(
            "sipstack_recordings_pending", "Recordings waiting to be uploaded", registry=r
        )
        self.recording_paths_refused = Counter(
            "sipstack_recording_paths_refused",
            "Recording paths outside RECORDING_PATHS refused (traversal, symlinks)",
            registry=r,
        )
        # State store faults (statefaults.py).
        self.state_disk_full = Gauge(
            "sipstack_state_disk_full",
            "1 while the state store's filesystem is full and reading is paused",
            registry=r,
        )
        self.state_quarantined = Counter(
            "sipstack_state_quarantined",
            "Corrupt state files moved aside at start (a fresh store was started)",
            registry=r,
        )
