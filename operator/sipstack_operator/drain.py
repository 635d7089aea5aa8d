"""The bounded drain on delete: one decision per look at the agent.

Pure (no I/O): the caller (Reconciler.drain) reads the Deployment and the
agent's /status, and passes what it saw. While the phase is Draining the
deletion waits (handlers.py raises kopf.TemporaryError and looks again);
every other phase lets it proceed:

- Skipped: nothing to wait for (spec.drain.timeoutSeconds 0, or no agent
  running that could deliver anything);
- Drained: the agent reports an empty outbox;
- TimedOut: the deadline passed with documents left (or the backlog could not
  be read), which stay in a retained claim.
"""

from __future__ import annotations

from dataclasses import dataclass

DRAINING, DRAINED, TIMED_OUT, SKIPPED = "Draining", "Drained", "TimedOut", "Skipped"
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

    @property
    def done(self) -> bool:
        return self.phase != DRAINING

    @property
    def event_reason(self) -> str:
        return EVENT_REASONS[self.phase]

    @property
    def event_type(self) -> str:
        return "Warning" if self.phase == TIMED_OUT else "Normal"


def decide(
    *,
    timeout_seconds: int,
    elapsed_seconds: float,
    agent_running: bool,
    backlog: int | None,
    claim: str,
    retained: bool,
) -> DrainStep:
    """What to do after one look at the agent, `elapsed_seconds` into the deletion."""
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
    remaining = max(0, int(timeout_seconds - elapsed_seconds))
    return DrainStep(
        DRAINING,
        f"waiting for the agent to deliver its outbox: {count} document(s) left, "
        f"deletion proceeds in at most {remaining} s",
        backlog,
    )
