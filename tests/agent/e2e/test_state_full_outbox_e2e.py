"""The real agent whose own outbox fills its state disk during an API outage (a real
tmpfs, nobody frees space): when the API is back every call arrives, the agent
restarted on the low disk meanwhile, and nothing is sent again and again. (Without the
restart it drains the same way; the restart adds a WAL cut back at close and the
store's reopening on a low disk. One run: the CI's minutes are few.)"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sipstack_agent.receiver import Receiver
from sipstack_agent.state.room import MB

from ..support.smallfs import SmallFs
from .helpers import all_complete, assert_revisions_once, free_port, wait_until, write_calls
from .test_e2e import receiver
from .test_state_faults_e2e import DISK_FULL_PROBLEM, agent, calls_at, metric, readyz

pytestmark = pytest.mark.timeout(300)
__all__ = ["receiver"]

RESERVE_MB = 10


@pytest.mark.parametrize("small_fs", ["24m"], indirect=True)  # 14 MB past the reserve
async def test_an_outbox_that_filled_the_disk_drains_by_itself_when_the_api_is_back(
    make_pbx_db: Callable[..., Awaitable[Any]],
    receiver: Receiver,
    small_fs: SmallFs,
    tmp_path: Path,
) -> None:
    pbx = await make_pbx_db("postgresql")
    calls = calls_at(1200, seed=77, hours_ago=3)  # about 1.2 times what 14 MB holds
    await write_calls(pbx.writer, calls)
    receiver.set_faults(fail_status=503, retry_after="1")  # the API is down
    state, port, log = small_fs.path / "state", free_port(), tmp_path / "agent.log"
    env = {"STATE_MIN_FREE_MB": str(RESERVE_MB)}
    proc = agent(pbx, receiver.calls_url, state, log, port, **env)
    try:

        def low() -> bool:
            code, reasons = readyz(port)
            return code == 503 and DISK_FULL_PROBLEM in reasons

        assert await wait_until(low, 120), (readyz(port), proc.log_tail())
        assert metric(port, "sipstack_state_disk_full") == 1.0
        assert "state disk low" in log.read_text()
        await asyncio.sleep(3)  # the stages meet the reserve again: the disk keeps its room
        free = small_fs.free()
        assert free >= (RESERVE_MB - 6) * MB, free  # minus what the last page may take
        assert await asyncio.to_thread(proc.terminate, 15) == 0, proc.log_tail()
        proc = agent(pbx, receiver.calls_url, state, log, port, **env)
        receiver.reset_faults()  # the API is back; nobody frees space
        done = all_complete(receiver, calls, state_dir=state)
        assert await wait_until(done, 200), (receiver.stats(), proc.log_tail(30))
        assert "state disk has space again" in log.read_text()
    finally:
        rc = await asyncio.to_thread(proc.terminate, 15)
    assert rc == 0, proc.log_tail()
    assert_revisions_once(receiver)
    stats = receiver.stats()
    # a delivered document is sent again only after a restart (its pass was in flight)
    assert stats.get("duplicates", 0) <= 300, stats
    assert stats.get("key_conflicts", 0) == 0, stats
