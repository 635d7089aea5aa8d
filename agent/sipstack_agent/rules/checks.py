"""The one result type of `sipstack-agent check` (and `support-bundle`).

Every check (configuration, state dir, API, PBX database, CEL feed: SQL,
cel_custom CSV or AMI) returns `CheckResult`s; `cli` only renders them.

The decision between FAIL and WARN lives here, once:
- FAIL: the agent cannot do its job until this is fixed (it will not start,
  or it starts and ships nothing / loses data): unreachable database or API,
  a table or column the reader needs is missing, an unreadable CSV file, rows
  whose times prove the zone wrong.
- WARN: the agent runs, but worse or with a caveat the operator should read:
  a missing index (slower), no LINKEDID_END (calls close by idle timeout), a
  fixed-offset zone, no event seen on an idle PBX, a plaintext connection, a
  database user that may write (the agent only SELECTs: least privilege, not a
  blocker).
- OK: checked and fine.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    detail: str
    hint: str = ""

    @classmethod
    def ok(cls, name: str, detail: str) -> CheckResult:
        return cls(name, Status.OK, detail)

    @classmethod
    def warn(cls, name: str, detail: str, hint: str = "") -> CheckResult:
        return cls(name, Status.WARN, detail, hint)

    @classmethod
    def fail(cls, name: str, detail: str, hint: str = "") -> CheckResult:
        return cls(name, Status.FAIL, detail, hint)

    @property
    def failed(self) -> bool:
        return self.status is Status.FAIL

    def render(self) -> str:
        """One line of `check` output: `STATUS name: detail -> hint` (no hint when OK)."""
        line = f"{self.status.value:<4} {self.name}: {self.detail}"
        if self.hint and self.status is not Status.OK:
            line += f" -> {self.hint}"
        return line


def worst(results: list[CheckResult]) -> Status:
    """FAIL if any failed, else WARN if any warned, else OK (an empty list is OK)."""
    statuses = {r.status for r in results}
    for s in (Status.FAIL, Status.WARN):
        if s in statuses:
            return s
    return Status.OK
