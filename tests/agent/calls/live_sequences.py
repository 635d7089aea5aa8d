"""Pickup and attended-transfer calls as Asterisk 20 writes them, in commit order.

The sample (shared/fixtures/asterisk20-sample) has a blind transfer but no
pickup and no attended transfer; these two follow the facts asterisk-data.md
records from the full capture: the phone that picks up (or the transfer
target) first has its own linkedid, Asterisk writes LINKEDID_END for it while
that channel is still up, and the channel's last rows (BRIDGE_EXIT, HANGUP,
CHAN_END) come much later under the caller's linkedid. Names, apps, extra
JSON and CDR legs are those of the sample's chan_sip PBX.

`commit_order(cels, cdrs)` is the order the rows become visible in the PBX
tables: a CEL row at its eventtime, a CDR row when its leg ends (calldate +
duration), the table order within the same instant.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sipstack_agent.calls import group_linkedids, smallest_linkedid
from sipstack_agent.calls.derive import cdr_end
from sipstack_agent.calls.document import cel_thread_selected
from sipstack_agent.model import CdrRow, CelRow

from .helpers import Seq

BRIDGE = '{{"bridge_id":"{0}","bridge_technology":"simple_bridge"}}'


@dataclass(frozen=True)
class LiveCall:
    """One call: its rows, its key, its linkedids, and when its last row is written."""

    name: str
    key: str
    linkedids: tuple[str, ...]
    cels: list[CelRow]
    cdrs: list[CdrRow]

    @property
    def last_cel_at(self) -> datetime:
        return max(r.eventtime for r in self.cels)


def calls_of(cels: Sequence[CelRow], cdrs: Sequence[CdrRow]) -> list[LiveCall]:
    """The calls in a set of rows (e.g. the sample), grouped as the agent groups them."""
    out = []
    for group in group_linkedids([*cels, *cdrs]):
        key = smallest_linkedid(group)
        mine = [c for c in cels if c.call_linkedid in group]
        theirs = [d for d in cdrs if d.call_linkedid in group]
        out.append(LiveCall(key, key, tuple(sorted(group)), mine, theirs))
    return out


def assert_whole(doc: dict[str, Any], call: LiveCall) -> None:
    """The document carries every selected CEL row and every CDR row of the call."""
    events = [t["event"] for t in doc["call_threads"]]
    assert events.count("CDR") == len(call.cdrs), (call.key, events)
    n_cel = sum(1 for r in call.cels if cel_thread_selected(r))
    assert len(events) - events.count("CDR") == n_cel, (call.key, events)


def commit_order(cels: Sequence[CelRow], cdrs: Sequence[CdrRow]) -> list[CelRow | CdrRow]:
    """Rows in the order the PBX commits them (CEL at eventtime, CDR at the leg's end)."""
    timed: list[tuple[datetime, int, CelRow | CdrRow]] = []
    for i, c in enumerate(cels):
        timed.append((c.eventtime, i, c))
    for j, d in enumerate(cdrs):
        timed.append((cdr_end(d), len(cels) + j, d))
    timed.sort(key=lambda t: (t[0], t[1]))
    return [r for _, _, r in timed]


def committed_at(row: CelRow | CdrRow) -> datetime:
    return row.eventtime if isinstance(row, CelRow) else cdr_end(row)


def pickup(seq: Seq | None = None, at: float = 0.0) -> LiveCall:
    """DID 4155551005 rings 101; 104 dials *8 (group pickup) and takes the call."""
    s = seq or Seq()
    base = int(s.at(at).timestamp())
    l1, r101, l2 = f"{base}.20", f"{base}.21", f"{base + 3}.22"
    trunk, ring, pick = "SIP/pstn-in-00000014", "SIP/101-00000015", "SIP/104-00000016"
    caller = {"cid_name": "Quinn Quade", "cid_num": "6505550005", "cid_ani": "6505550005"}
    n = len(s.rows), len(s.cdrs)

    def t(x: float) -> float:
        return at + x

    s.cel(t(0), "CHAN_START", trunk, l1, l1, exten="4155551005", context="from-pstn", **caller)
    s.cel(
        t(0.001), "APP_START", trunk, l1, l1, appname="Dial", appdata="SIP/101,20,tT",
        exten="s", context="from-pstn", cid_dnid="4155551005", **caller,
    )  # fmt: skip
    s.cel(t(0.002), "CHAN_START", ring, r101, l1, exten="101", context="internal", **caller)
    s.cel(
        t(3.0), "CHAN_START", pick, l2, l2, cid_name="Erin Evans", cid_num="104",
        exten="*8", context="internal",
    )  # fmt: skip
    s.cel(
        t(3.001), "APP_START", pick, l2, l2, appname="Pickup", appdata="",
        cid_name="Erin Evans", cid_num="104", exten="*8", context="internal",
    )  # fmt: skip
    s.cel(
        t(3.002), "PICKUP", ring, r101, l1, appname="AppDial", extra=json.dumps(
            {"pickup_channel": pick}
        ), **caller,
    )  # fmt: skip
    # 104 now carries the caller's linkedid: its own ends while the channel is up.
    s.cel(t(3.003), "LINKEDID_END", pick, l2, l2, appname="Pickup", exten="*8")
    hang26 = '{"hangupcause":26,"hangupsource":"","dialstatus":""}'
    s.cel(t(3.004), "HANGUP", ring, r101, l1, appname="AppDial", extra=hang26, **caller)
    s.cel(t(3.004), "CHAN_END", ring, r101, l1, appname="AppDial", **caller)
    s.cel(t(3.005), "ANSWER", trunk, l1, l1, appname="Dial", appdata="SIP/101,20,tT", **caller)
    s.cel(
        t(3.006), "BRIDGE_ENTER", trunk, l1, l1, appname="Dial", peer=pick,
        extra=BRIDGE.format("7a1c"), **caller,
    )  # fmt: skip
    # ~37 s of talk: nothing is written until the end.
    s.cel(t(40.0), "BRIDGE_EXIT", trunk, l1, l1, appname="Dial", extra=BRIDGE.format("7a1c"))
    s.cel(t(40.001), "BRIDGE_EXIT", pick, l2, l1, appname="Pickup", extra=BRIDGE.format("7a1c"))
    s.cel(t(40.002), "APP_END", trunk, l1, l1, appname="Dial", appdata="SIP/101,20,tT")
    s.cel(
        t(40.003), "HANGUP", trunk, l1, l1,
        extra='{"hangupcause":16,"hangupsource":"SIP/pstn-in-00000014","dialstatus":"ANSWER"}',
    )  # fmt: skip
    s.cel(t(40.003), "CHAN_END", trunk, l1, l1)
    s.cel(
        t(40.004), "HANGUP", pick, l2, l1, appname="Pickup",
        extra='{"hangupcause":16,"hangupsource":"SIP/pstn-in-00000014","dialstatus":""}',
    )  # fmt: skip
    s.cel(t(40.004), "CHAN_END", pick, l2, l1, appname="Pickup")
    s.cel(t(40.004), "LINKEDID_END", pick, l2, l1, appname="Pickup")
    clid = '"Quinn Quade" <6505550005>'
    s.cdr(
        t(0), l1, l1, clid=clid, src="6505550005", dst="4155551005", dcontext="from-pstn",
        channel=trunk, dstchannel=ring, lastapp="Dial", lastdata="SIP/101,20,tT",
        duration=3, billsec=0, disposition="NO ANSWER", amaflags="3", userfield="p_pickup",
        sequence=20,
    )  # fmt: skip
    s.cdr(
        t(0), l1, l1, clid=clid, src="6505550005", dst="4155551005", dcontext="from-pstn",
        channel=trunk, dstchannel=pick, lastapp="Dial", lastdata="SIP/101,20,tT",
        duration=40, billsec=37, disposition="ANSWERED", amaflags="3", userfield="p_pickup",
        sequence=21,
    )  # fmt: skip
    s.cdr(
        t(3), l2, l1, clid='"Erin Evans" <104>', src="104", dst="*8", dcontext="internal",
        channel=pick, lastapp="Pickup", duration=37, billsec=37, disposition="ANSWERED",
        amaflags="3", userfield="p_pickup", sequence=22,
    )  # fmt: skip
    return LiveCall("pickup", l1, (l1, l2), s.rows[n[0] :], s.cdrs[n[1] :])


def attended_transfer(seq: Seq | None = None, at: float = 0.0) -> LiveCall:
    """DID 4155551006 -> 101; 101 consults 104 on a second channel and transfers."""
    s = seq or Seq()
    base = int(s.at(at).timestamp())
    l1, b101, l5, e104 = f"{base}.30", f"{base}.31", f"{base + 10}.32", f"{base + 10}.33"
    trunk, leg_a, leg_c, leg_e = (
        "SIP/pstn-in-0000001e", "SIP/101-0000001f", "SIP/101-00000020", "SIP/104-00000021"
    )  # fmt: skip
    caller = {"cid_name": "Rita Reyes", "cid_num": "6505550006", "cid_ani": "6505550006"}
    bob = {"cid_name": "Bob Brown", "cid_num": "101"}
    n = len(s.rows), len(s.cdrs)

    def t(x: float) -> float:
        return at + x

    s.cel(t(0), "CHAN_START", trunk, l1, l1, exten="4155551006", context="from-pstn", **caller)
    s.cel(
        t(0.001), "APP_START", trunk, l1, l1, appname="Dial", appdata="SIP/101,20,tT",
        cid_dnid="4155551006", context="from-pstn", **caller,
    )  # fmt: skip
    s.cel(t(0.002), "CHAN_START", leg_a, b101, l1, exten="101", context="internal", **caller)
    s.cel(t(2.0), "ANSWER", leg_a, b101, l1, appname="AppDial", **caller)
    s.cel(t(2.001), "ANSWER", trunk, l1, l1, appname="Dial", **caller)
    s.cel(t(2.002), "BRIDGE_ENTER", leg_a, b101, l1, appname="AppDial", extra=BRIDGE.format("b1"))
    s.cel(
        t(2.003), "BRIDGE_ENTER", trunk, l1, l1, appname="Dial", peer=leg_a,
        extra=BRIDGE.format("b1"),
    )  # fmt: skip
    # 101 puts the caller on hold and dials 104 on a second channel (its own linkedid).
    s.cel(t(10.0), "CHAN_START", leg_c, l5, l5, exten="104", context="internal", **bob)
    s.cel(
        t(10.001), "APP_START", leg_c, l5, l5, appname="Dial", appdata="SIP/104,20,tT",
        exten="104", context="internal", **bob,
    )  # fmt: skip
    s.cel(t(10.002), "CHAN_START", leg_e, e104, l5, exten="104", context="internal", **bob)
    s.cel(t(13.0), "ANSWER", leg_e, e104, l5, appname="AppDial", **bob)
    s.cel(t(13.001), "ANSWER", leg_c, l5, l5, appname="Dial", **bob)
    s.cel(t(13.002), "BRIDGE_ENTER", leg_e, e104, l5, appname="AppDial", extra=BRIDGE.format("b2"))
    s.cel(
        t(13.003), "BRIDGE_ENTER", leg_c, l5, l5, appname="Dial", peer=leg_e,
        extra=BRIDGE.format("b2"),
    )  # fmt: skip
    xfer = {
        "bridge1_id": "b1", "channel2_name": leg_c, "channel2_uniqueid": l5,
        "bridge2_id": "b2", "transferee_channel_name": trunk,
        "transferee_channel_uniqueid": l1, "transfer_target_channel_name": leg_e,
        "transfer_target_channel_uniqueid": e104,
    }  # fmt: skip
    s.cel(t(20.0), "ATTENDEDTRANSFER", leg_a, b101, l1, appname="AppDial", extra=json.dumps(xfer))
    s.cel(t(20.001), "BRIDGE_EXIT", leg_a, b101, l1, appname="AppDial", extra=BRIDGE.format("b1"))
    s.cel(t(20.001), "BRIDGE_EXIT", leg_c, l5, l5, appname="Dial", extra=BRIDGE.format("b2"))
    hang = '{"hangupcause":16,"hangupsource":"","dialstatus":""}'
    s.cel(t(20.002), "HANGUP", leg_a, b101, l1, appname="AppDial", extra=hang)
    s.cel(t(20.002), "CHAN_END", leg_a, b101, l1, appname="AppDial")
    s.cel(t(20.003), "APP_END", leg_c, l5, l5, appname="Dial", appdata="SIP/104,20,tT")
    s.cel(t(20.003), "HANGUP", leg_c, l5, l5, extra=hang)
    s.cel(t(20.003), "CHAN_END", leg_c, l5, l5)
    # 104 now talks to the caller and carries linkedid l1: l5 ends while 104 is up.
    s.cel(t(20.004), "LINKEDID_END", leg_c, l5, l5)
    s.cel(t(80.0), "BRIDGE_EXIT", trunk, l1, l1, appname="Dial", extra=BRIDGE.format("b2"))
    s.cel(t(80.001), "BRIDGE_EXIT", leg_e, e104, l1, appname="AppDial", extra=BRIDGE.format("b2"))
    s.cel(t(80.002), "APP_END", trunk, l1, l1, appname="Dial", appdata="SIP/101,20,tT")
    s.cel(
        t(80.003), "HANGUP", trunk, l1, l1,
        extra='{"hangupcause":16,"hangupsource":"SIP/pstn-in-0000001e","dialstatus":"ANSWER"}',
    )  # fmt: skip
    s.cel(t(80.003), "CHAN_END", trunk, l1, l1)
    s.cel(t(80.004), "HANGUP", leg_e, e104, l1, appname="AppDial", extra=hang)
    s.cel(t(80.004), "CHAN_END", leg_e, e104, l1, appname="AppDial")
    s.cel(t(80.004), "LINKEDID_END", leg_e, e104, l1, appname="AppDial")
    clid = '"Rita Reyes" <6505550006>'
    s.cdr(
        t(0), l1, l1, clid=clid, src="6505550006", dst="4155551006", dcontext="from-pstn",
        channel=trunk, dstchannel=leg_a, lastapp="Dial", lastdata="SIP/101,20,tT",
        duration=20, billsec=18, disposition="ANSWERED", amaflags="3", userfield="q_attxfer",
        sequence=30,
    )  # fmt: skip
    s.cdr(
        t(10), l5, l5, clid='"Bob Brown" <101>', src="101", dst="104", dcontext="internal",
        channel=leg_c, dstchannel=leg_e, lastapp="Dial", lastdata="SIP/104,20,tT",
        duration=10, billsec=7, disposition="ANSWERED", amaflags="3", userfield="q_attxfer",
        sequence=31,
    )  # fmt: skip
    s.cdr(
        t(20), l1, l1, clid=clid, src="6505550006", dst="4155551006", dcontext="from-pstn",
        channel=trunk, dstchannel=leg_e, lastapp="Dial", lastdata="SIP/101,20,tT",
        duration=60, billsec=60, disposition="ANSWERED", amaflags="3", userfield="q_attxfer",
        sequence=32,
    )  # fmt: skip
    return LiveCall("attended_transfer", l1, (l1, l5), s.rows[n[0] :], s.cdrs[n[1] :])
