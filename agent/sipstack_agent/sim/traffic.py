"""Traffic generator (pure): Asterisk 20 calls, rows exactly as Asterisk writes them.

Event sequences, channel names, appdata, extra JSON and CDR fields follow the
real capture in shared/fixtures/asterisk20-sample (chan_sip, cel_pgsql with
events=ALL minus the noise). `TrafficGenerator` holds the PBX's state (random
source, channel counter, extensions) and the building blocks every scenario
uses; the scenarios themselves are in sim.scenarios and sim.routed.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from .channels import Chan, Recorder, json_text
from .scenarios import BUILDERS, DEFAULT_MIX, SCENARIOS
from .timeline import ExpectedCall, SimCall

_FIRST = (
    "Alice",
    "Bob",
    "Carol",
    "Dave",
    "Erin",
    "Frank",
    "Grace",
    "Heidi",
    "Ivan",
    "Judy",
    "Mallory",
    "Niaj",
    "Olivia",
    "Peggy",
    "Rupert",
    "Sybil",
    "Trent",
    "Victor",
    "Walter",
)
_LAST = (
    "Anders",
    "Brown",
    "Clark",
    "Dunn",
    "Evans",
    "Fisher",
    "Green",
    "Hughes",
    "Irwin",
    "Jones",
    "King",
    "Lewis",
    "Moore",
    "Nolan",
    "Owens",
    "Price",
    "Quinn",
    "Reed",
)
_ODD_NAMES = ("José Müller", "Zoë Ñúñez", "François Lefèvre", "Ærøskøbing Ltd")
_AREA_CODES = ("415", "650", "408", "212", "905", "917", "613", "416")


class TrafficGenerator:
    """Deterministic Asterisk 20 traffic: `TrafficGenerator(seed).call("queue", at)`.

    Each call gets uniqueids `<epoch>.<n>` and channel names `SIP/<peer>-<n:08x>` from
    one PBX-wide counter, as a real Asterisk numbers them. Options:
    - `linkedid_end=False`: no LINKEDID_END rows (stock cel.conf).
    - `recording_ratio`: share of inbound answered calls with a MixMonitor.
    - `oddities=True`: accented caller names and a few NULL-able columns left empty.
    - `ring` / `talk`: (min, max) seconds.
    - `first_channel`: where the channel/uniqueid counter starts (a PBX restart starts at 0).
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        mix: Mapping[str, float] | None = None,
        linkedid_end: bool = True,
        recording_ratio: float = 0.3,
        oddities: bool = False,
        ring: tuple[float, float] = (1.0, 4.0),
        talk: tuple[float, float] = (3.0, 30.0),
        start: datetime | None = None,
        first_channel: int = 0,
    ) -> None:
        self.rng = random.Random(seed)
        self.mix = dict(mix or DEFAULT_MIX)
        for k in self.mix:
            if k not in SCENARIOS:
                raise ValueError(f"unknown scenario {k!r}")
        self.linkedid_end = linkedid_end
        self.recording_ratio = recording_ratio
        self.oddities = oddities
        self.ring = ring
        self.talk = talk
        self.clock = start or datetime(2026, 11, 24, 4, 39, 20, 510110, tzinfo=UTC)
        self._chan_seq = first_channel
        self._cdr_seq = 0
        self.extensions: dict[str, str] = {}
        for i in range(40):
            ext = str(100 + i)
            self.extensions[ext] = f"{_FIRST[i % len(_FIRST)]} {_LAST[(i * 7) % len(_LAST)]}"

    # -- helpers ---------------------------------------------------------------
    def uniform(self, lohi: tuple[float, float]) -> float:
        return self.rng.uniform(*lohi)

    def external(self) -> tuple[str, str]:
        num = self.rng.choice(_AREA_CODES) + "555" + f"{self.rng.randrange(10000):04d}"
        if self.oddities and self.rng.random() < 0.2:
            name = self.rng.choice(_ODD_NAMES)
        else:
            name = f"{self.rng.choice(_FIRST)} {self.rng.choice(_LAST)}"
        return name, num

    def ext(self, exclude: tuple[str, ...] = ()) -> str:
        while True:
            ext = self.rng.choice(list(self.extensions))
            if ext not in exclude:
                return ext

    def did(self) -> str:
        return f"41555510{self.rng.randrange(100):02d}"

    def chan(
        self,
        peer: str,
        t: datetime,
        linkedid: str | None,
        name: str,
        num: str,
        exten: str,
        context: str,
    ) -> Chan:
        n = self._chan_seq
        self._chan_seq += 1
        uid = f"{int(t.timestamp())}.{n}"
        return Chan(
            name=f"SIP/{peer}-{n:08x}" if not peer.startswith("Local/") else f"{peer}-{n:08x}",
            uniqueid=uid,
            linkedid=linkedid or uid,
            cid_name=name,
            cid_num=num,
            exten=exten,
            context=context,
        )

    def local_pair(self, ext: str, ctx: str, t: datetime, linkedid: str) -> tuple[Chan, Chan]:
        n = self._chan_seq
        self._chan_seq += 1
        base = f"Local/{ext}@{ctx}-{n:08x}"
        u1 = f"{int(t.timestamp())}.{n}"
        n2 = self._chan_seq
        self._chan_seq += 1
        u2 = f"{int(t.timestamp())}.{n2}"
        one = Chan(f"{base};1", u1, linkedid, "", "", ext, ctx)
        two = Chan(f"{base};2", u2, linkedid, "", "", ext, ctx)
        return one, two

    def _cdr_sequence(self, step: int = 1) -> int:
        s = self._cdr_seq
        self._cdr_seq += step
        return s

    def pick_scenario(self) -> str:
        names = list(self.mix)
        return self.rng.choices(names, weights=[self.mix[n] for n in names])[0]

    # -- calls ------------------------------------------------------------------
    def call(self, scenario: str | None = None, at: datetime | None = None) -> SimCall:
        """One call starting at `at` (default: the generator's clock, then advanced)."""
        scenario = scenario or self.pick_scenario()
        if at is None:
            at = self.clock
            self.clock = self.clock + timedelta(seconds=self.rng.uniform(0.5, 3.0))
        return BUILDERS[scenario](self, at)

    def calls(self, n: int, rate: float = 10.0, start: datetime | None = None) -> list[SimCall]:
        """`n` calls starting `1/rate` seconds apart (with jitter), mixed per `mix`."""
        t0 = start or self.clock
        out = []
        for i in range(n):
            jitter = self.rng.uniform(-0.3, 0.3) / rate if i else 0.0
            out.append(self.call(None, t0 + timedelta(seconds=i / rate + jitter)))
        self.clock = max(self.clock, t0 + timedelta(seconds=n / rate))
        return out

    # -- ids, extras, CDRs, the end of a call ---------------------------------------
    def new_uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def hangup_extra(self, cause: int, source: str, dialstatus: str) -> str:
        return json_text({"hangupcause": cause, "hangupsource": source, "dialstatus": dialstatus})

    @staticmethod
    def clid(name: str, num: str) -> str:
        return f'"{name}" <{num}>' if name else f"<{num}>"

    def cdr(
        self,
        start: datetime,
        src_ch: Chan,
        *,
        src: str,
        dst: str,
        dcontext: str,
        dstchannel: str,
        lastapp: str,
        lastdata: str,
        duration: float,
        billsec: float,
        disposition: str,
        clid: str,
        seq_step: int = 1,
        uniqueid: str | None = None,
        linkedid: str | None = None,
    ) -> dict[str, Any]:
        return {
            "calldate": start.replace(microsecond=0),
            "clid": clid,
            "src": src,
            "dst": dst,
            "dcontext": dcontext,
            "channel": src_ch.name,
            "dstchannel": dstchannel,
            "lastapp": lastapp,
            "lastdata": lastdata,
            "duration": max(0, int(duration)),
            "billsec": max(0, int(billsec)),
            "disposition": disposition,
            "amaflags": 3,
            "accountcode": "",
            "uniqueid": uniqueid or src_ch.uniqueid,
            "userfield": "",
            "linkedid": linkedid or src_ch.linkedid,
            "sequence": self._cdr_sequence(seq_step),
            "peeraccount": "",
        }

    def finish(self, rec: Recorder, last: Chan, cdrs: list[dict[str, Any]], **exp: Any) -> SimCall:
        if self.linkedid_end:
            # LINKEDID_END repeats the last row of the last channel to go away.
            prev = next(r for r in reversed(rec.rows) if r["channame"] == last.name)
            rec.rows.append(
                {**prev, "eventtype": "LINKEDID_END", "eventtime": rec.t, "peer": "", "extra": ""}
            )
        end = rec.rows[-1]["eventtime"]
        start = rec.rows[0]["eventtime"]
        uids = tuple(dict.fromkeys(r["uniqueid"] for r in rec.rows))
        expected = ExpectedCall(
            linkedid=rec.rows[0]["linkedid"],
            start=start,
            end=end,
            cel_count=len(rec.rows),
            cdr_count=len(cdrs),
            linkedid_end=self.linkedid_end,
            uniqueids=uids,
            **exp,
        )
        # Asterisk posts the CDRs as the last channel goes away: just before or just
        # after LINKEDID_END (a late CDR then gives the call one more revision).
        written = end + timedelta(seconds=self.rng.uniform(-0.01, 0.02))
        return SimCall(expected=expected, cels=rec.rows, cdrs=cdrs, cdr_written_at=written)

    # -- the building blocks of the scenarios ---------------------------------------
    def two_party(
        self,
        at: datetime,
        caller: Chan,
        callee_ext: str,
        dial: str,
        answered: bool,
        busy: bool,
        rec: Recorder,
        *,
        callee_peer: str | None = None,
        callee_name: str | None = None,
        callee_num: str | None = None,
        recording: str = "",
    ) -> tuple[Chan, datetime | None, datetime, datetime]:
        """CHAN_START caller .. end of Dial. Returns (callee, answer_t, dial_start, end_t)."""
        rec.ev("CHAN_START", caller, same_time=True)
        caller.ani, caller.dnid = caller.cid_num, caller.exten
        if recording:
            rec.ev("APP_START", caller, appname="MixMonitor", appdata=f"{recording},b")
            rec.ev("APP_END", caller, appname="MixMonitor", appdata=f"{recording},b")
        caller.app = ("Dial", dial)
        rec.ev("APP_START", caller)
        dial_start = rec.t
        callee = self.chan(
            callee_peer or callee_ext,
            rec.t,
            caller.linkedid,
            callee_name if callee_name is not None else self.extensions.get(callee_ext, ""),
            callee_num if callee_num is not None else callee_ext,
            "s",
            "internal",
        )
        rec.ev("CHAN_START", callee)
        callee.ani = callee.cid_num
        callee.app = ("AppDial", "(Outgoing Line)")
        if busy:
            rec.tick(self.rng.uniform(0.001, 0.01))
            rec.ev("HANGUP", callee, exten=caller.exten, extra=self.hangup_extra(17, "", ""))
            rec.ev("CHAN_END", callee, exten=caller.exten, same_time=True)
            return callee, None, dial_start, rec.t
        if not answered:
            rec.tick(self.uniform(self.ring) * 3 + 5)
            rec.ev("HANGUP", callee, exten=caller.exten, extra=self.hangup_extra(16, "", ""))
            rec.ev("CHAN_END", callee, exten=caller.exten, same_time=True)
            return callee, None, dial_start, rec.t
        rec.tick(self.uniform(self.ring))
        rec.ev("ANSWER", callee, exten=caller.exten, same_time=True)
        answer_t = rec.t
        rec.ev("ANSWER", caller)
        return callee, answer_t, dial_start, rec.t

    def bridge_and_end(
        self, rec: Recorder, caller: Chan, callee: Chan, bridge: str, caller_hangs_up: bool
    ) -> Chan:
        bx = rec.bridge_extra(bridge)
        rec.ev("BRIDGE_ENTER", callee, exten="", extra=bx)
        rec.ev("BRIDGE_ENTER", caller, peer=callee.name, extra=bx)
        rec.tick(self.uniform(self.talk))
        src = caller if caller_hangs_up else callee
        dialstatus = "ANSWER"
        if self.rng.random() < 0.5:
            # sample (a): caller side exits first, callee torn down, then the caller
            first, second = (caller, callee) if caller_hangs_up else (callee, caller)
            rec.ev(
                "BRIDGE_EXIT",
                first,
                peer=second.name if first is caller else "",
                exten="" if first is callee else None,
                extra=bx,
                same_time=True,
            )
            rec.ev("BRIDGE_EXIT", second, exten="" if second is callee else None, extra=bx)
            rec.ev("HANGUP", callee, exten="", extra=self.hangup_extra(16, src.name, ""))
            rec.ev("CHAN_END", callee, exten="", same_time=True)
            rec.ev("APP_END", caller)
            caller.app = ("", "")
            rec.ev(
                "HANGUP", caller, extra=self.hangup_extra(16, src.name, dialstatus), same_time=True
            )
            rec.ev("CHAN_END", caller, same_time=True)
            return caller
        # sample (c): caller torn down first, then the callee
        rec.ev("BRIDGE_EXIT", caller, peer=callee.name, extra=bx, same_time=True)
        rec.ev("APP_END", caller)
        caller.app = ("", "")
        rec.ev("HANGUP", caller, extra=self.hangup_extra(16, src.name, dialstatus), same_time=True)
        rec.ev("CHAN_END", caller, same_time=True)
        rec.ev("BRIDGE_EXIT", callee, exten="", extra=bx)
        rec.ev("HANGUP", callee, exten="", extra=self.hangup_extra(16, src.name, ""))
        rec.ev("CHAN_END", callee, exten="", same_time=True)
        return callee

    def inbound_caller(self, at: datetime) -> tuple[Chan, str]:
        name, num = self.external()
        did = self.did()
        caller = self.chan("pstn-in", at, None, name, num, did, "from-pstn")
        return caller, did
