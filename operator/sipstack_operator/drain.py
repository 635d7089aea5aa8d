"""The bounded drain on delete: one decision per look at the agent.

Pure (no I/O): the caller (Reconciler.drain) reads the Deployment and the
agent's /status, and passes what it saw. While the phase is Draining the
deletion waits (handlers.py raises kopf.TemporaryError and looks again);
every other phase lets it proceed:

- Skipped: nothing to wait for (spec.drain.timeoutSeconds 0, or no agent
  running that could deliver anything);
- Drained: the agent reports an empty outbox;
- TimedOut: the deadline passed with documents left (or the backlog could not
  be read), which stay in a retained claim; or, reason DrainUnreadable, no
  backlog could be read from the agent's /status for UNREADABLE_GRACE_SECONDS
  (since the deletion started or since the last successful read) although
  its Deployment counts as running: nothing shows that it is draining, so the
  deletion does not wait the whole timeout for it.
"""

from __future__ import annotations

from dataclasses import dataclass

DRAINING, DRAINED, TIMED_OUT, SKIPPED = "Draining", "Drained", "TimedOut", "Skipped"
UNREADABLE = "DrainUnreadable"  # the event (and Ready) reason of a TimedOut for that cause

# How long a running agent's /status may give no backlog before the deletion
# stops waiting for it. 60 s is 6 looks at the longest poll (drain_poll, at
# most 10 s, each look giving up after SIPSTACK_AGENT_STATUS_TIMEOUT, 3 s by
# default): longer than a transient (a slow answer, a Service's endpoints
# catching up with a restarted pod), a tenth of the default 600 s timeout. An
# agent that is delivering answers /status all along (it is served from
# memory and the store's counters), and one whose pod is not ready is
# Skipped at once; what is left stays in the claim either way (whenDeleted
# Retain), for a re-created connector's agent to deliver. Not a CRD field:
# spec.drain.timeoutSeconds bounds it already (the earlier of the two ends
# the wait), and 0 still skips the drain.
UNREADABLE_GRACE_SECONDS = 60
EVENT_REASONS = {
    DRAINING: "Draining",
    DRAINED: "Drained",
    TIMED_OUT: "DrainTimedOut",
    SKIPPED: "DrainSkipped",
}


@dataclass(frozen=True)
class DrainStep:
    phase: str
    message: str
    backlog: int | None
    reason: str | None = None  # overrides the phase's reason (UNREADABLE)

    @property
    def done(self) -> bool:
        return self.phase != DRAINING

    @property
    def event_reason(self) -> str:
        return self.reason or EVENT_REASONS[self.phase]

    @property
    def event_type(self) -> str:
        return "Warning" if self.phase == TIMED_OUT else "Normal"


def decide(
    *,
    timeout_seconds: int,
    elapsed_seconds: float,
    agent_running: bool,
    backlog: int | None,
    unread_seconds: float,
    claim: str,
    retained: bool,
) -> DrainStep:
    """What to do after one look at the agent, `elapsed_seconds` into the deletion.

    `backlog` is what this look read (None: /status could not be read or gave
    no backlog); `unread_seconds` is how long no backlog has been read: since
    the last look that read one, or since the deletion started if none did
    (the caller keeps that time in status.drain.lastReadAt; only used when
    `backlog` is None).
    """
    left = (
        f"what is left stays in PVC {claim} (whenDeleted Retain)"
        if retained
        else f"PVC {claim} is deleted with the connector (whenDeleted Delete)"
    )
    if timeout_seconds <= 0:
        return DrainStep(SKIPPED, f"spec.drain.timeoutSeconds is 0: not waiting; {left}", backlog)
    if not agent_running:
        return DrainStep(SKIPPED, f"the agent is not running, nothing can drain; {left}", backlog)
    if backlog == 0:
        return DrainStep(DRAINED, "the agent's outbox is empty", 0)
    count = "an unknown number of" if backlog is None else str(backlog)
    if elapsed_seconds >= timeout_seconds:
        return DrainStep(
            TIMED_OUT,
            f"{count} document(s) still in the outbox after {timeout_seconds} s; {left}",
            backlog,
        )
    remaining = timeout_seconds - elapsed_seconds
    if backlog is None:
        if unread_seconds >= UNREADABLE_GRACE_SECONDS:
            return DrainStep(
                TIMED_OUT,
                f"no backlog could be read from the agent's /status for {int(unread_seconds)} s "
                f"(limit {UNREADABLE_GRACE_SECONDS} s) although its pod is ready: nothing shows "
                f"it is draining, not waiting for the rest of the {timeout_seconds} s; "
                f"an unknown number of document(s) may be left; {left}",
                None,
                reason=UNREADABLE,
            )
        remaining = min(remaining, UNREADABLE_GRACE_SECONDS - unread_seconds)
        return DrainStep(
            DRAINING,
            f"waiting for the agent to deliver its outbox: {count} document(s) left "
            f"(no backlog read from its /status for {int(unread_seconds)} s), "
            f"deletion proceeds in at most {max(0, int(remaining))} s",
            None,
        )
    return DrainStep(
        DRAINING,
        f"waiting for the agent to deliver its outbox: {count} document(s) left, "
        f"deletion proceeds in at most {max(0, int(remaining))} s",
        backlog,
    )
