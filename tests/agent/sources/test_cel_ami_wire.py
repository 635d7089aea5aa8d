"""CEL over AMI, the hot path: the lean reading of CEL events reads what panoramisk reads.

`ami_events.cel_headers` splits `Event: CEL` messages without panoramisk's
`Message`; everything else still goes through panoramisk. Compared here with
panoramisk's own parser, and end to end with the real client against the
protocol-level server (messages cut at every byte, events mixed with
responses, a CEL event carrying an ActionID) in test_cel_ami.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from panoramisk.message import Message
from sipstack_agent.model import CelRow
from sipstack_agent.sim.ami import cel_event, event_block
from sipstack_agent.sources.ami_events import cel_headers, event_to_row, headers_to_row
from sipstack_agent.sources.celtime import TimeParser

T0 = datetime(2026, 11, 24, 4, 39, 20, 510110, tzinfo=UTC)

TZ = ZoneInfo("America/Toronto")


def wire_text(headers: list[tuple[str, str]]) -> str:
    """One message as the connection decodes it (latin-1), stripped like panoramisk does."""
    return event_block(headers).decode("latin-1").strip()


EVENTS = [
    cel_event("CHAN_START", T0, "1.1", "1.0", timestamp=True, CallerIDname="José Núñez"),
    cel_event("BRIDGE_ENTER", T0, "1.1", "1.0", local_tz=TZ, Extra='{"a": "b: c"}'),
    cel_event("USER_DEFINED", T0, "1.1", "1.0", UserDefType="IVR", AppData="x: y "),
    cel_event("IVR_CHOICE", T0, "1.1", "1.0", AMAFlags="BILLING", Peer=" spaced "),
    [*cel_event("HANGUP", T0, "1.1", "1.0"), ("Extra", "second"), ("Junk line", "")],
]


@pytest.mark.parametrize("headers", EVENTS)
def test_cel_headers_read_what_panoramisk_reads(headers):
    text = wire_text(headers)
    ours = cel_headers(text)
    theirs = Message.from_line(text)
    assert ours is not None and theirs is not None
    assert ours == {k.lower(): v for k, v in theirs.items() if k != "content"}  # its body
    for zone in ("UTC", "America/Toronto"):
        times = TimeParser(zone)
        assert headers_to_row(ours, times, "s:1") == event_to_row(theirs, times, "s:1")


def test_a_line_without_colon_space_is_no_header_and_repeats_become_lists():
    h = cel_headers("Event: CEL\r\nEventName: ANSWER\r\nnot a header\r\nExtra: 1\r\nextra: 2")
    assert h == {"event": "CEL", "eventname": "ANSWER", "extra": ["1", "2"]}


@pytest.mark.parametrize(
    "text",
    [
        "Response: Success\r\nActionID: 1\r\nPing: Pong",
        "Event: Newchannel\r\nChannel: SIP/1",
        "Event: CELX\r\nEventName: ANSWER",
        "Event: CEL\r\nActionID: 42\r\nEventName: ANSWER",  # answers an action: panoramisk's
        "Event: CEL\r\ncommandid: 7\r\nEventName: ANSWER",
        "Event: CEL\r\nResult: 200%20ok\r\nEventName: ANSWER",  # panoramisk unquotes Result
        "Event: CEL\r\nEvent: Other\r\nEventName: ANSWER",
        "event: cel\r\nEventName: ANSWER",  # not how manager.c writes it: panoramisk reads it
    ],
)
def test_anything_but_a_plain_cel_event_is_left_to_panoramisk(text):
    assert cel_headers(text) is None


def test_utf8_text_is_restored_from_the_latin1_connection():
    h = cel_headers(wire_text(EVENTS[0]))
    assert h is not None
    assert headers_to_row(h, TimeParser()).cid_name == "José Núñez"


def test_dedup_keys_stay_those_of_earlier_versions():
    """Stored rows are matched by dedup_key: the key of a row never changes."""
    row = CelRow(
        "ANSWER",
        datetime(2026, 11, 24, 4, 39, 20, 510110, tzinfo=UTC),
        "1795495160.1",
        "1795495160.0",
        channame="SIP/x-1",
        appdata="José",
        source="ami",
        source_pos="s:7",
    )
    assert row.dedup_key == "ami:h:dbf2e91ffc612f65d045ff5c"
