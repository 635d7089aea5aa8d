"""The running agent's control actions, served by health.py at /control/* behind
CONTROL_TOKEN: the same logic as the CLI commands.

- `POST /control/resend` `{"since": T, "until": T?, "linkedids": [..]?}`: starts
  admin/resend.py in the agent (202); 409 while another resend runs.
- `GET /control/resend`: the progress of the last resend (the cursor in the store).
- `POST /control/dead-letters/retry` `{"ids": [..]?, "reason": R?, "all": true?}`:
  admin/deadletters.py `retry_in` on the agent's own store.
- `GET /control/dead-letters`: the dead letters (as `dead-letters list --json`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..config import Settings
from ..health import ControlAction
from ..state import StateStore

if TYPE_CHECKING:  # imported when first used: the agent's start-up does not wait for them
    from . import resend

log = logging.getLogger("sipstack_agent.control")

Answer = tuple[int, dict[str, object]]


def _error(msg: str, status: int = 400) -> Answer:
    return status, {"error": msg}


class Control:
    """`HealthServer(..., control=Control(settings, store).actions(), control_token=...)`."""

    def __init__(self, settings: Settings, store: StateStore) -> None:
        self.settings = settings
        self.store = store
        self._task: asyncio.Task[resend.Progress] | None = None
        self._window: resend.Window | None = None
        self._progress: resend.Progress | None = None
        self._error = ""

    def actions(self) -> dict[str, ControlAction]:
        return {
            "POST resend": self.start_resend,
            "GET resend": self.resend_status,
            "POST dead-letters/retry": self.retry,
            "GET dead-letters": self.list_dead_letters,
        }

    # ------------------------------------------------------------ resend

    async def start_resend(self, body: dict[str, object]) -> Answer:

        if self._task is not None and not self._task.done():
            return 409, {"error": "a resend is running", **self._report()}
        try:
            window = _window(body)
        except ValueError as e:
            return _error(str(e))
        self._window, self._progress, self._error = window, None, ""
        self._task = asyncio.create_task(self._run(window), name="resend")
        return 202, {"accepted": True, **self._report()}

    async def _run(self, window: resend.Window) -> resend.Progress:
        from . import resend

        def on_page(p: resend.Progress) -> None:
            self._progress = p

        try:
            return await resend.resend(self.settings, window, on_page=on_page)
        except Exception as exc:
            self._error = f"{type(exc).__name__}: {exc}"
            log.exception("resend %s failed", window.key())
            raise

    def _report(self) -> dict[str, object]:
        w, p = self._window, self._progress
        running = self._task is not None and not self._task.done()
        return {
            "running": running,
            "window": None
            if w is None
            else {
                "since": w.since.isoformat(),
                "until": w.until.isoformat(),
                "linkedids": list(w.linkedids),
            },
            "read_through": p.read_through.isoformat() if p else None,
            "sent": p.sent if p else 0,
            "done": bool(p and p.done),
            "error": self._error,
        }

    async def resend_status(self, body: dict[str, object]) -> Answer:
        from . import resend

        if self._window is None:
            saved = await self.store.get_position(resend.CURSOR)
            return 200, {"running": False, "saved": saved}
        return 200, self._report()

    async def close(self) -> None:
        """Stop a running resend (agent shutdown); its cursor lets the next one resume."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ------------------------------------------------------------ dead letters

    async def retry(self, body: dict[str, object]) -> Answer:
        from . import deadletters

        ids = body.get("ids", [])
        reason = body.get("reason")
        every = body.get("all", False)
        if not (isinstance(ids, list) and all(isinstance(i, int) for i in ids)):
            return _error("ids: a list of dead letter ids")
        if reason is not None and not isinstance(reason, str):
            return _error("reason: a string such as http_400")
        sel = deadletters.Selection(tuple(int(i) for i in ids), reason, every is True)
        if sel.empty:
            return _error("give ids, a reason or all: true")
        got = await deadletters.retry_in(self.store, sel)
        return (200 if not got.missing else 404), got.as_json()

    async def list_dead_letters(self, body: dict[str, object]) -> Answer:
        from . import deadletters

        reason = body.get("reason")
        rows = await self.store.dead_letters_where(
            reason=reason if isinstance(reason, str) else None
        )
        return 200, {"dead_letters": [deadletters.describe(r) for r in rows]}


def _window(body: dict[str, object]) -> resend.Window:
    from . import resend

    since, until, lids = body.get("since"), body.get("until"), body.get("linkedids", [])
    if not isinstance(since, str):
        raise ValueError("since: an ISO-8601 time is required")
    if until is not None and not isinstance(until, str):
        raise ValueError("until: an ISO-8601 time")
    if not (isinstance(lids, list) and all(isinstance(x, str) for x in lids)):
        raise ValueError("linkedids: a list of strings")
    start = resend.parse_time(since)
    end = resend.parse_time(until) if until else datetime.now(UTC)
    return resend.Window(start, end, tuple(lids), open_end=not until)
