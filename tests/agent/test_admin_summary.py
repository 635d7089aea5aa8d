"""admin.summary: the health rule of `sipstack-agent status` (exit 0 / 1 / 2) and the
time zone read from a /status whatever shape its `timezone` field takes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sipstack_agent.admin.summary import assess, render, timezone_of

RUNNING = {"running": True, "restarts": 0, "last_error": None, "last_error_at": None}


def status(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "stages": {"shipper": dict(RUNNING), "source:cdr": dict(RUNNING)},
        "ready_problems": [],
        "sources": {"sql:cdr": {"connected": True}},
        "backlog": {"outbox_depth": 0, "dead_letters": 0},
        "shipper": {"auth_failed": False, "stuck": False},
    }
    base.update(kw)
    return base


@pytest.mark.parametrize(
    ("doc", "state", "problems"),
    [
        (status(), "healthy", []),
        (status(backlog={"dead_letters": 2}), "degraded",
         ["2 dead letter(s) the API refused: sipstack-agent dead-letters list"]),
        (status(ready_problems=["api key rejected (HTTP 401/403): check API_KEY"],
                shipper={"auth_failed": True}), "degraded",
         ["api key rejected (HTTP 401/403): check API_KEY"]),
        (status(ready_problems=None, shipper={"auth_failed": True, "stuck": True}), "degraded",
         ["the API rejects the key (401/403): fix API_KEY",
          "documents wait longer than the stuck threshold: the API does not accept them"]),
        (status(stages={"evaluator": {**RUNNING, "running": False, "last_error": "boom"}}),
         "degraded", ["stage evaluator not running: boom"]),
        (status(ready_problems=["stage evaluator restarting: boom"],
                stages={"evaluator": {**RUNNING, "running": False, "restarts": 1}}),
         "degraded", ["stage evaluator restarting: boom"]),
        (status(ready_problems=["sql:cdr: source not connected"],
                sources={"sql:cdr": {"connected": False}}), "degraded",
         ["sql:cdr: source not connected"]),
    ],
)  # fmt: skip
def test_health_of_an_answering_agent(doc: dict[str, Any], state: str, problems: list[str]) -> None:
    h = assess(doc)
    assert (h.state, h.problems) == (state, problems)
    assert h.exit_code == {"healthy": 0, "degraded": 1}[state]


def test_an_agent_that_does_not_answer_is_down_whatever_its_store_says() -> None:
    h = assess({"backlog": {"dead_letters": 1}}, answering=False)
    assert h.state == "down" and h.exit_code == 2
    assert h.problems == ["1 dead letter(s) the API refused: sipstack-agent dead-letters list"]


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({}, None),
        ({"timezone": "Europe/Paris"}, ("Europe/Paris", "")),
        ({"timezone": {"zone": "America/Toronto", "source": "detected from the PBX"}},
         ("America/Toronto", "detected from the PBX")),
        ({"time_zone": {"name": "UTC", "how": "DB_TIMEZONE"}}, ("UTC", "DB_TIMEZONE")),
        ({"timezone": {"offset": "+02:00"}}, ("offset=+02:00", "")),
        ({"db_timezone": {"zone": "Asia/Tokyo", "detected_from": "SELECT now()"}},
         ("Asia/Tokyo", "SELECT now()")),
    ],
)  # fmt: skip
def test_timezone_is_shown_when_reported_and_tolerated_when_absent(
    doc: dict[str, Any], expected: tuple[str, str] | None
) -> None:
    assert timezone_of(doc) == expected


def test_render_names_what_matters() -> None:
    now = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    doc = status(
        version="0.14.0", connector_id="pbx-east", timezone={"zone": "UTC", "source": "probe"},
        sources={"sql:cdr": {"connected": True, "newest_row_at": "2026-12-01T09:59:30+00:00"}},
        checkpoints={"sql:cdr:cdr": {"mode": "id", "id": 42}},
        backlog={"outbox_depth": 3, "oldest_undelivered_seconds": 90, "dead_letters": 1,
                 "open_calls": 2, "dirty_calls": 0,
                 "by_age": {"under_a_minute": 2, "under_an_hour": 1},
                 "dead_letters_by_reason": {"http_400": 1}},
        shipper={"last_success_at": "2026-12-01T09:59:58+00:00", "url": "https://api"},
    )  # fmt: skip
    text = render(doc, assess(doc), origin="http://127.0.0.1:8000/status", now=now)
    for part in (
        "sipstack-agent 0.14.0  connector pbx-east  DEGRADED (exit 1)",
        "time zone: UTC (probe)",
        "sql:cdr          connected, lag 30s",
        "sql:cdr:cdr              id=42",
        "backlog: 3 document(s) waiting (oldest 90s), 2 open call(s)",
        "by age: < 1 min: 2, 1 min - 1 h: 1",
        "last shipped: 2026-12-01T09:59:58+00:00 (2s ago)",
        "http_400             1",
    ):
        assert part in text, (part, text)
