"""Variables of the old Docker connector (v0.13.x) that this agent no longer reads.

The old variables that still do a job are read by `config.load_settings()` under
their old names (as aliases of the new variable, which wins); docs/migration.md
lists every old variable and what it does now. The ones below did nothing the new
agent does differently (or nothing at all in the old connector): setting one is
one warning at start-up, so no old `.env` changes meaning silently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

UNUSED: dict[str, str] = {
    # name: what the agent does instead (in the warning and in docs/migration.md)
    "CDR_LOOKBACK_MINUTES": "POLL_LOOKBACK_SECONDS",
    "RECORDING_ENABLED": "recordings are always linked, RECORDING_UPLOAD uploads them",
    "RECORDING_MAX_UPLOAD_RETRIES": "uploads retry until API_RETRY_HORIZON",
    "MAX_WORKERS": "API_CONCURRENCY",
    "CONNECTION_POOL_SIZE": "DB_POOL_SIZE",
    "API_RETRY_ATTEMPTS": "API_RETRY_HORIZON",
    "MONITORING_ENABLED": "MONITORING_PORT=0 disables the endpoint",
    "METRICS_INTERVAL": "metrics are live on /metrics",
    "ENABLE_CALL_THREADS": "call_threads are always sent",
    "NORMALIZE_PHONE_NUMBERS": "ASTERISK_E164_ENABLED",
    "DETECT_DIRECTION": "direction is always detected",
    "INCLUDE_RAW_DATA": "call_threads carry the rows",
    "CEL_CSV_MAX_LINES": "MAX_RECORDS_PER_POLL",
    "CONNECTOR_VERSION": "the agent's own version",
    "CDR_MODE": "calls are shipped one document per POST",
    "CDR_BATCH_TIMEOUT": "CDR_POLL_INTERVAL",
    "RECORDING_WATCHER_ENABLED": "RECORDING_PATHS",
    "RECORDING_WATCH_PATHS": "RECORDING_PATHS",
    "RECORDING_CHECK_INTERVAL_SECONDS": "RECORDING_POLL_INTERVAL",
    "RECORDING_UPLOAD_RETRY_MINUTES": "API_RETRY_HORIZON",
}


def same_value(a: str, b: str) -> bool:
    """Do two settings say the same (`30` and `30.0`, `TRUE` and `true`)?"""
    if a == b or a.lower() == b.lower():
        return True
    try:
        fa, fb = float(a), float(b)
    except ValueError:
        return False
    return math.isfinite(fa) and fa == fb


def alias_conflict(winner: str, other: str) -> str:
    return f"{winner} and {other} are both set and disagree; {winner} is used"


def unused_warning(env: Mapping[str, str]) -> str | None:
    """One warning naming every old, no longer used variable that is set (not empty)."""
    names = [n for n in UNUSED if (env.get(n) or "").strip()]
    if not names:
        return None
    instead = "; ".join(f"{n}: {UNUSED[n]}" for n in names)
    return (
        f"{', '.join(names)}: old connector variable(s), not used by this agent; "
        f"instead ({instead}); see docs/migration.md"
    )
