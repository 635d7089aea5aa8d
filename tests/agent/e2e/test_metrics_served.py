"""What the real agent process serves on /metrics (issue 11 §7): the dead-letter
label sets at 0 from start-up, so `increase(sipstack_dead_letters_total[10m]) > 0`
sees the first dead letter; `sipstack_build_info`; one `sipstack_` prefix for
every metric but the six of the old connector; exactly the families of
`Metrics()` (the registry the chart tests check alert expressions against).
"""

from __future__ import annotations

import asyncio
import platform
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sipstack_agent import __version__
from sipstack_agent.metrics import DEAD_LETTER_REASONS, OLD_NAMES, PREFIX, Metrics
from sipstack_agent.receiver import Receiver
from sipstack_agent.sim.timeline import SimCall

from .helpers import free_port, start_agent, wait_until, write_calls
from .test_e2e import past_calls, receiver

pytestmark = pytest.mark.timeout(120)
__all__ = ["receiver"]  # the fixture of test_e2e, used by name

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> tuple[set[str], Samples]:
    """(family names, samples) of the agent's /metrics; raises while it is not up."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as resp:
        text = resp.read().decode()
    families = list(text_string_to_metric_families(text))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples
    }
    return {f.name for f in families}, samples


async def scrape_when_up(port: int, agent: Any) -> tuple[set[str], Samples]:
    for _ in range(300):
        try:
            return await asyncio.to_thread(scrape, port)
        except OSError:
            assert agent.alive(), agent.log_tail()
            await asyncio.sleep(0.1)
    raise AssertionError(f"the agent never served /metrics: {agent.log_tail()}")


def dead(kind: str, reason: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("sipstack_dead_letters_total", (("kind", kind), ("reason", reason)))


async def test_metrics_at_start_and_after_the_first_dead_letter(
    make_pbx_db: Callable[..., Awaitable[Any]], receiver: Receiver, tmp_path: Path
) -> None:
    pbx = await make_pbx_db("sqlite")
    calls: list[SimCall] = past_calls(5, seed=7)
    bad = calls[2].expected.linkedid
    receiver.set_faults(fail_status=422, fail_linkedid=bad, fail_path="calls")
    port = free_port()
    state = tmp_path / "state"
    agent = start_agent(
        pbx.settings,
        receiver.calls_url,
        state,
        MONITORING_PORT=str(port),
        MONITORING_HOST="127.0.0.1",
    )
    try:
        names, at_start = await scrape_when_up(port, agent)
        # Start-up: every pre-initialised dead-letter set is there, at 0.
        for kind, reasons in DEAD_LETTER_REASONS.items():
            for reason in reasons:
                assert at_start[dead(kind, reason)] == 0, (kind, reason)
        assert (
            at_start[
                (
                    "sipstack_build_info",
                    (("python", platform.python_version()), ("version", __version__)),
                )
            ]
            == 1
        )
        # The served families are those of the registry the chart tests read (the
        # text format adds a `<counter>_created` family per counter).
        families = {n for n in names if not n.endswith("_created")}
        assert families == {f.name for f in Metrics().registry.collect()}
        assert {n for n in families if not n.startswith(PREFIX)} == set(OLD_NAMES)

        await write_calls(pbx.writer, calls)

        def dead_lettered() -> bool:
            try:
                # >= 1: a progressive call may have had a second revision rejected too.
                return scrape(port)[1].get(dead("call", "http_422"), 0) >= 1
            except OSError:
                return False

        assert await wait_until(dead_lettered, timeout=60), agent.log_tail()
        _, after = await asyncio.to_thread(scrape, port)
        assert after[dead("call", "retry_horizon")] == 0
    finally:
        assert await asyncio.to_thread(agent.terminate, 15) == 0


def test_the_pre_initialised_kinds_are_the_outbox_kinds() -> None:
    import inspect

    from sipstack_agent.recording_queue import KIND as RECORDING_KIND
    from sipstack_agent.shipping.outbox import Shipper

    call_kind = inspect.signature(Shipper).parameters["kind"].default
    assert set(DEAD_LETTER_REASONS) == {call_kind, RECORDING_KIND}
