"""The one check-result type: rendering and the FAIL/WARN/OK order, as a table."""

from __future__ import annotations

import pytest
from sipstack_agent.rules.checks import CheckResult, Status, worst


@pytest.mark.parametrize(
    ("result", "line"),
    [
        (CheckResult.ok("db", "reachable"), "OK   db: reachable"),
        (CheckResult(Status.OK.name.lower(), Status.OK, "x", "hint hidden"), "OK   ok: x"),
        (
            CheckResult.warn("index", "no index on cel.linkedid", "CREATE INDEX"),
            "WARN index: no index on cel.linkedid -> CREATE INDEX",
        ),
        (
            CheckResult.fail("api", "HTTP 401", "check API_KEY"),
            "FAIL api: HTTP 401 -> check API_KEY",
        ),
        (CheckResult.fail("api", "HTTP 401"), "FAIL api: HTTP 401"),
    ],
)
def test_render(result: CheckResult, line: str) -> None:
    assert result.render() == line


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], Status.OK),
        ([Status.OK, Status.OK], Status.OK),
        ([Status.OK, Status.WARN], Status.WARN),
        ([Status.WARN, Status.FAIL, Status.OK], Status.FAIL),
        ([Status.FAIL], Status.FAIL),
    ],
)
def test_worst(statuses: list[Status], expected: Status) -> None:
    results = [CheckResult(f"c{i}", s, "d") for i, s in enumerate(statuses)]
    assert worst(results) is expected
    assert any(r.failed for r in results) is (expected is Status.FAIL)
