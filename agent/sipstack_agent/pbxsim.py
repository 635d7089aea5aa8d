"""A simulated Asterisk PBX database: the tables Asterisk writes, and traffic.

Used by `sipstack-agent demo`, the benchmarks and the tests. The DDL mirrors
what cdr_pgsql / cel_pgsql, cdr_adaptive_odbc / cel_odbc (MySQL) and
cdr_sqlite3_custom / cel_sqlite3_custom produce on real installs.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from .model import CDR_COLUMNS, CDR_OPTIONAL_COLUMNS

CEL_DDL: dict[str, str] = {
    "postgresql": """
CREATE TABLE IF NOT EXISTS {table} (
    id BIGSERIAL PRIMARY KEY,
    eventtype VARCHAR(30) NOT NULL,
    eventtime TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    cid_name VARCHAR(80), cid_num VARCHAR(80), cid_ani VARCHAR(80),
    cid_rdnis VARCHAR(80), cid_dnid VARCHAR(80),
    exten VARCHAR(80), context VARCHAR(80), channame VARCHAR(80),
    appname VARCHAR(80), appdata VARCHAR(512), amaflags INTEGER,
    accountcode VARCHAR(32), uniqueid VARCHAR(150), linkedid VARCHAR(150),
    peer VARCHAR(80), userdeftype VARCHAR(255), extra VARCHAR(512)
)""",
    "mysql": """
CREATE TABLE IF NOT EXISTS {table} (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    eventtype VARCHAR(30) NOT NULL,
    eventtime DATETIME NOT NULL,
    cid_name VARCHAR(80), cid_num VARCHAR(80), cid_ani VARCHAR(80),
    cid_rdnis VARCHAR(80), cid_dnid VARCHAR(80),
    exten VARCHAR(80), context VARCHAR(80), channame VARCHAR(80),
    appname VARCHAR(80), appdata VARCHAR(512), amaflags INT,
    accountcode VARCHAR(32), uniqueid VARCHAR(150), linkedid VARCHAR(150),
    peer VARCHAR(80), userdeftype VARCHAR(255), extra VARCHAR(512)
) DEFAULT CHARSET=latin1""",
    "sqlite": """
CREATE TABLE IF NOT EXISTS {table} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    eventtype TEXT NOT NULL, eventtime TEXT NOT NULL,
    cid_name TEXT, cid_num TEXT, cid_ani TEXT, cid_rdnis TEXT, cid_dnid TEXT,
    exten TEXT, context TEXT, channame TEXT, appname TEXT, appdata TEXT,
    amaflags INTEGER, accountcode TEXT, uniqueid TEXT, linkedid TEXT,
    peer TEXT, userdeftype TEXT, extra TEXT
)""",
}

CDR_DDL: dict[str, str] = {
    "postgresql": """
CREATE TABLE IF NOT EXISTS {table} (
    id BIGSERIAL PRIMARY KEY,
    calldate TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    clid VARCHAR(80), src VARCHAR(80), dst VARCHAR(80), dcontext VARCHAR(80),
    channel VARCHAR(80), dstchannel VARCHAR(80), lastapp VARCHAR(80),
    lastdata VARCHAR(80), duration INTEGER, billsec INTEGER,
    disposition VARCHAR(45), amaflags INTEGER, accountcode VARCHAR(20),
    uniqueid VARCHAR(150), userfield VARCHAR(255), linkedid VARCHAR(150),
    sequence INTEGER, peeraccount VARCHAR(20)
)""",
    "mysql": """
CREATE TABLE IF NOT EXISTS {table} (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    calldate DATETIME NOT NULL,
    clid VARCHAR(80), src VARCHAR(80), dst VARCHAR(80), dcontext VARCHAR(80),
    channel VARCHAR(80), dstchannel VARCHAR(80), lastapp VARCHAR(80),
    lastdata VARCHAR(80), duration INT, billsec INT,
    disposition VARCHAR(45), amaflags INT, accountcode VARCHAR(20),
    uniqueid VARCHAR(150), userfield VARCHAR(255), linkedid VARCHAR(150),
    sequence INT, peeraccount VARCHAR(20)
) DEFAULT CHARSET=latin1""",
    "sqlite": """
CREATE TABLE IF NOT EXISTS {table} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    calldate TEXT NOT NULL,
    clid TEXT, src TEXT, dst TEXT, dcontext TEXT, channel TEXT, dstchannel TEXT,
    lastapp TEXT, lastdata TEXT, duration INTEGER, billsec INTEGER,
    disposition TEXT, amaflags INTEGER, accountcode TEXT, uniqueid TEXT,
    userfield TEXT, linkedid TEXT, sequence INTEGER, peeraccount TEXT
)""",
}

INDEX_DDL: tuple[str, ...] = (
    "CREATE INDEX {table}_linkedid_idx ON {table} (linkedid)",
    "CREATE INDEX {table}_{timecol}_idx ON {table} ({timecol})",
)


def create_table_statements(
    dialect: str, cdr_table: str = "cdr", cel_table: str = "cel"
) -> list[str]:
    """SQL to create Asterisk's cdr and cel tables with their usual indexes."""
    stmts = [
        CDR_DDL[dialect].format(table=cdr_table),
        CEL_DDL[dialect].format(table=cel_table),
    ]
    for table, timecol in ((cdr_table, "calldate"), (cel_table, "eventtime")):
        stmts.extend(s.format(table=table, timecol=timecol) for s in INDEX_DDL)
    return stmts


_FREEPBX_MYSQL = """CREATE TABLE `{t}` (
  `calldate` datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  `clid` varchar(80) NOT NULL DEFAULT '',
  `src` varchar(80) NOT NULL DEFAULT '',
  `dst` varchar(80) NOT NULL DEFAULT '',
  `dcontext` varchar(80) NOT NULL DEFAULT '',
  `channel` varchar(80) NOT NULL DEFAULT '',
  `dstchannel` varchar(80) NOT NULL DEFAULT '',
  `lastapp` varchar(80) NOT NULL DEFAULT '',
  `lastdata` varchar(80) NOT NULL DEFAULT '',
  `duration` int(11) NOT NULL DEFAULT '0',
  `billsec` int(11) NOT NULL DEFAULT '0',
  `disposition` varchar(45) NOT NULL DEFAULT '',
  `amaflags` int(11) NOT NULL DEFAULT '0',
  `accountcode` varchar(20) NOT NULL DEFAULT '',
  `uniqueid` varchar(32) NOT NULL DEFAULT '',
  `userfield` varchar(255) NOT NULL DEFAULT '',
  `did` varchar(50) NOT NULL DEFAULT '',
  `recordingfile` varchar(255) NOT NULL DEFAULT '',
  `cnum` varchar(80) NOT NULL DEFAULT '',
  `cnam` varchar(80) NOT NULL DEFAULT '',
  `outbound_cnum` varchar(80) NOT NULL DEFAULT '',
  `outbound_cnam` varchar(80) NOT NULL DEFAULT '',
  `dst_cnam` varchar(80) NOT NULL DEFAULT '',
  `linkedid` varchar(32) NOT NULL DEFAULT '',
  `peeraccount` varchar(80) NOT NULL DEFAULT '',
  `sequence` int(11) NOT NULL DEFAULT '0',
  KEY `calldate` (`calldate`),
  KEY `dst` (`dst`),
  KEY `accountcode` (`accountcode`),
  KEY `uniqueid` (`uniqueid`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"""

_FREEPBX_INT = ("duration", "billsec", "amaflags", "sequence")


def _freepbx_generic(t: str, time_type: str, text: str, integer: str) -> list[str]:
    cols = [f'"calldate" {time_type} NOT NULL']
    for c in (*CDR_COLUMNS, *CDR_OPTIONAL_COLUMNS):
        if c in _FREEPBX_INT:
            cols.append(f'"{c}" {integer} NOT NULL DEFAULT 0')
        elif c != "calldate":
            cols.append(f"\"{c}\" {text} NOT NULL DEFAULT ''")
    stmts = [f'CREATE TABLE "{t}" ({", ".join(cols)})']
    stmts += [
        f'CREATE INDEX "{t}_{c}" ON "{t}" ("{c}")'
        for c in ("calldate", "dst", "accountcode", "uniqueid")
    ]
    return stmts


def freepbx_cdr_statements(dialect: str, table: str = "cdr") -> list[str]:
    """FreePBX's `asteriskcdrdb.cdr`: no id column, its extra columns and four indexes.

    MariaDB: FreePBX's own table (the Issabel/FreePBX dump, with the `linkedid`,
    `peeraccount` and `sequence` columns current FreePBX adds); PostgreSQL and SQLite
    get the same columns and indexes in their own types.
    """
    if dialect == "mysql":
        return [_FREEPBX_MYSQL.format(t=table)]
    if dialect == "postgresql":
        return _freepbx_generic(table, "timestamp without time zone", "varchar(255)", "integer")
    return _freepbx_generic(table, "TEXT", "TEXT", "INTEGER")


# ---------------------------------------------------------------------------
# Traffic generator (pure): rows exactly as Asterisk 20 writes them
# ---------------------------------------------------------------------------
#
# Event sequences, channel names, appdata, extra JSON and CDR fields follow the
# real capture in shared/fixtures/asterisk20-sample (chan_sip, cel_pgsql with
# events=ALL minus the noise). Times in the row dicts are aware UTC datetimes;
# the writers convert them to the PBX's naive local time per dialect.

SCENARIOS: tuple[str, ...] = (
    "answered",
    "unanswered",
    "busy",
    "blind_transfer",
    "queue",
    "internal",
    "outbound",
)
DEFAULT_MIX: dict[str, float] = {
    "answered": 30,
    "unanswered": 10,
    "busy": 5,
    "blind_transfer": 8,
    "queue": 15,
    "internal": 12,
    "outbound": 20,
}

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
_QUEUES = ("support", "sales", "billing")


@dataclass(frozen=True)
class ExpectedCall:
    """What a correct assembly of a simulated call gives (the oracle of the tests)."""

    linkedid: str
    scenario: str
    direction: str  # i | o | x
    disposition: str  # ANSWERED | NO ANSWER | BUSY
    answered: bool
    src_number: str
    dst_number: str  # DID (inbound), extension (internal), dialled number (outbound)
    answered_by: str  # extension that finally talked, "" when unanswered
    transfers: int
    queue: str  # queue name, "" when none
    recording: str  # MixMonitor file name, "" when none
    start: datetime  # aware UTC
    end: datetime  # aware UTC (last CEL event)
    answer_time: datetime | None
    cel_count: int
    cdr_count: int
    linkedid_end: bool
    uniqueids: tuple[str, ...]

    @property
    def talk_seconds(self) -> float:
        return (self.end - self.answer_time).total_seconds() if self.answer_time else 0.0

    @property
    def ring_seconds(self) -> float:
        t = self.answer_time or self.end
        return (t - self.start).total_seconds()


@dataclass
class SimCall:
    """One simulated call: its CEL and CDR row dicts and the expected outcome.

    Row dicts carry the table's column names (`model.CEL_COLUMNS` / `CDR_COLUMNS`);
    `eventtime` / `calldate` are aware UTC datetimes; `amaflags` is an int.
    `cdr_written_at` is when Asterisk writes the CDR rows (the end of the call).
    """

    expected: ExpectedCall
    cels: list[dict[str, Any]]
    cdrs: list[dict[str, Any]]
    cdr_written_at: datetime


@dataclass(frozen=True)
class Write:
    """One row as the PBX commits it: at `at`, into table `kind` ("cel" or "cdr")."""

    at: datetime
    kind: str
    row: dict[str, Any]
    linkedid: str
    seq: int = 0


@dataclass
class _Chan:
    name: str
    uniqueid: str
    linkedid: str
    cid_name: str
    cid_num: str
    exten: str
    context: str
    started: bool = False  # after CHAN_START the ani/dnid fields are filled
    dnid: str = ""
    ani: str = ""
    app: tuple[str, str] = ("", "")
    in_bridge: bool = False


def _json(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


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
    def _uniform(self, lohi: tuple[float, float]) -> float:
        return self.rng.uniform(*lohi)

    def _external(self) -> tuple[str, str]:
        num = self.rng.choice(_AREA_CODES) + "555" + f"{self.rng.randrange(10000):04d}"
        if self.oddities and self.rng.random() < 0.2:
            name = self.rng.choice(_ODD_NAMES)
        else:
            name = f"{self.rng.choice(_FIRST)} {self.rng.choice(_LAST)}"
        return name, num

    def _ext(self, exclude: tuple[str, ...] = ()) -> str:
        while True:
            ext = self.rng.choice(list(self.extensions))
            if ext not in exclude:
                return ext

    def _did(self) -> str:
        return f"41555510{self.rng.randrange(100):02d}"

    def _chan(
        self,
        peer: str,
        t: datetime,
        linkedid: str | None,
        name: str,
        num: str,
        exten: str,
        context: str,
    ) -> _Chan:
        n = self._chan_seq
        self._chan_seq += 1
        uid = f"{int(t.timestamp())}.{n}"
        return _Chan(
            name=f"SIP/{peer}-{n:08x}" if not peer.startswith("Local/") else f"{peer}-{n:08x}",
            uniqueid=uid,
            linkedid=linkedid or uid,
            cid_name=name,
            cid_num=num,
            exten=exten,
            context=context,
        )

    def _local_pair(self, ext: str, ctx: str, t: datetime, linkedid: str) -> tuple[_Chan, _Chan]:
        n = self._chan_seq
        self._chan_seq += 1
        base = f"Local/{ext}@{ctx}-{n:08x}"
        u1 = f"{int(t.timestamp())}.{n}"
        n2 = self._chan_seq
        self._chan_seq += 1
        u2 = f"{int(t.timestamp())}.{n2}"
        one = _Chan(f"{base};1", u1, linkedid, "", "", ext, ctx)
        two = _Chan(f"{base};2", u2, linkedid, "", "", ext, ctx)
        return one, two

    def _cdr_sequence(self, step: int = 1) -> int:
        s = self._cdr_seq
        self._cdr_seq += step
        return s

    def pick_scenario(self) -> str:
        names = list(self.mix)
        return self.rng.choices(names, weights=[self.mix[n] for n in names])[0]

    # -- public ------------------------------------------------------------------
    def call(self, scenario: str | None = None, at: datetime | None = None) -> SimCall:
        """One call starting at `at` (default: the generator's clock, then advanced)."""
        scenario = scenario or self.pick_scenario()
        if at is None:
            at = self.clock
            self.clock = self.clock + timedelta(seconds=self.rng.uniform(0.5, 3.0))
        builder = {
            "answered": self._answered,
            "unanswered": self._unanswered,
            "busy": self._busy,
            "blind_transfer": self._blind_transfer,
            "queue": self._queue,
            "internal": self._internal,
            "outbound": self._outbound,
        }[scenario]
        return builder(at)

    def calls(self, n: int, rate: float = 10.0, start: datetime | None = None) -> list[SimCall]:
        """`n` calls starting `1/rate` seconds apart (with jitter), mixed per `mix`."""
        t0 = start or self.clock
        out = []
        for i in range(n):
            jitter = self.rng.uniform(-0.3, 0.3) / rate if i else 0.0
            out.append(self.call(None, t0 + timedelta(seconds=i / rate + jitter)))
        self.clock = max(self.clock, t0 + timedelta(seconds=n / rate))
        return out

    # -- event emission -------------------------------------------------------------
    class _Rec:
        def __init__(self, gen: TrafficGenerator, t: datetime) -> None:
            self.gen = gen
            self.t = t
            self.rows: list[dict[str, Any]] = []

        def tick(self, seconds: float = 0.0) -> datetime:
            self.t = self.t + timedelta(seconds=seconds or self.gen.rng.uniform(0.00005, 0.0006))
            return self.t

        def ev(
            self,
            eventtype: str,
            ch: _Chan,
            *,
            appname: str | None = None,
            appdata: str | None = None,
            peer: str = "",
            extra: str = "",
            exten: str | None = None,
            same_time: bool = False,
        ) -> None:
            if not same_time:
                self.tick()
            app = ch.app if appname is None else (appname, appdata or "")
            blank_ids = eventtype == "CHAN_START"
            odd = self.gen.oddities and self.gen.rng.random() < 0.05
            self.rows.append(
                {
                    "eventtype": eventtype,
                    "eventtime": self.t,
                    "cid_name": ch.cid_name,
                    "cid_num": ch.cid_num,
                    "cid_ani": "" if blank_ids else ch.ani,
                    "cid_rdnis": "",
                    "cid_dnid": "" if blank_ids else ch.dnid,
                    "exten": ch.exten if exten is None else exten,
                    "context": ch.context,
                    "channame": ch.name,
                    "appname": app[0],
                    "appdata": app[1],
                    "amaflags": 3,
                    "accountcode": None if odd else "",
                    "uniqueid": ch.uniqueid,
                    "linkedid": ch.linkedid,
                    "peer": peer,
                    "userdeftype": None if odd else "",
                    "extra": extra,
                }
            )

        def bridge_extra(self, bridge: str) -> str:
            return _json({"bridge_id": bridge, "bridge_technology": "simple_bridge"})

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _hangup_extra(self, cause: int, source: str, dialstatus: str) -> str:
        return _json({"hangupcause": cause, "hangupsource": source, "dialstatus": dialstatus})

    @staticmethod
    def _clid(name: str, num: str) -> str:
        return f'"{name}" <{num}>' if name else f"<{num}>"

    def _cdr(
        self,
        start: datetime,
        src_ch: _Chan,
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

    def _finish(self, rec: _Rec, last: _Chan, cdrs: list[dict[str, Any]], **exp: Any) -> SimCall:
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

    # -- scenarios --------------------------------------------------------------------
    def _two_party(
        self,
        at: datetime,
        caller: _Chan,
        callee_ext: str,
        dial: str,
        answered: bool,
        busy: bool,
        rec: _Rec,
        *,
        callee_peer: str | None = None,
        callee_name: str | None = None,
        callee_num: str | None = None,
        recording: str = "",
    ) -> tuple[_Chan, datetime | None, datetime, datetime]:
        """CHAN_START caller .. end of Dial. Returns (callee, answer_t, dial_start, end_t)."""
        rec.ev("CHAN_START", caller, same_time=True)
        caller.ani, caller.dnid = caller.cid_num, caller.exten
        if recording:
            rec.ev("APP_START", caller, appname="MixMonitor", appdata=f"{recording},b")
            rec.ev("APP_END", caller, appname="MixMonitor", appdata=f"{recording},b")
        caller.app = ("Dial", dial)
        rec.ev("APP_START", caller)
        dial_start = rec.t
        callee = self._chan(
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
            rec.ev("HANGUP", callee, exten=caller.exten, extra=self._hangup_extra(17, "", ""))
            rec.ev("CHAN_END", callee, exten=caller.exten, same_time=True)
            return callee, None, dial_start, rec.t
        if not answered:
            rec.tick(self._uniform(self.ring) * 3 + 5)
            rec.ev("HANGUP", callee, exten=caller.exten, extra=self._hangup_extra(16, "", ""))
            rec.ev("CHAN_END", callee, exten=caller.exten, same_time=True)
            return callee, None, dial_start, rec.t
        rec.tick(self._uniform(self.ring))
        rec.ev("ANSWER", callee, exten=caller.exten, same_time=True)
        answer_t = rec.t
        rec.ev("ANSWER", caller)
        return callee, answer_t, dial_start, rec.t

    def _bridge_and_end(
        self, rec: _Rec, caller: _Chan, callee: _Chan, bridge: str, caller_hangs_up: bool
    ) -> _Chan:
        bx = rec.bridge_extra(bridge)
        rec.ev("BRIDGE_ENTER", callee, exten="", extra=bx)
        rec.ev("BRIDGE_ENTER", caller, peer=callee.name, extra=bx)
        rec.tick(self._uniform(self.talk))
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
            rec.ev("HANGUP", callee, exten="", extra=self._hangup_extra(16, src.name, ""))
            rec.ev("CHAN_END", callee, exten="", same_time=True)
            rec.ev("APP_END", caller)
            caller.app = ("", "")
            rec.ev(
                "HANGUP", caller, extra=self._hangup_extra(16, src.name, dialstatus), same_time=True
            )
            rec.ev("CHAN_END", caller, same_time=True)
            return caller
        # sample (c): caller torn down first, then the callee
        rec.ev("BRIDGE_EXIT", caller, peer=callee.name, extra=bx, same_time=True)
        rec.ev("APP_END", caller)
        caller.app = ("", "")
        rec.ev("HANGUP", caller, extra=self._hangup_extra(16, src.name, dialstatus), same_time=True)
        rec.ev("CHAN_END", caller, same_time=True)
        rec.ev("BRIDGE_EXIT", callee, exten="", extra=bx)
        rec.ev("HANGUP", callee, exten="", extra=self._hangup_extra(16, src.name, ""))
        rec.ev("CHAN_END", callee, exten="", same_time=True)
        return callee

    def _inbound_caller(self, at: datetime) -> tuple[_Chan, str]:
        name, num = self._external()
        did = self._did()
        caller = self._chan("pstn-in", at, None, name, num, did, "from-pstn")
        return caller, did

    def _answered(self, at: datetime) -> SimCall:
        rec = self._Rec(self, at)
        caller, did = self._inbound_caller(at)
        ext = self._ext()
        recording = ""
        if self.rng.random() < self.recording_ratio:
            stamp = at.strftime("%Y%m%d-%H%M%S")
            recording = f"in-{did}-{caller.cid_num}-{stamp}-{caller.uniqueid}.wav"
        dial = f"SIP/{ext},20,tT"
        callee, ans, _, _ = self._two_party(
            at, caller, ext, dial, True, False, rec, recording=recording
        )
        last = self._bridge_and_end(rec, caller, callee, self._uuid(), self.rng.random() < 0.6)
        end = rec.t
        cdr = self._cdr(
            at,
            caller,
            src=caller.cid_num,
            dst=did,
            dcontext="from-pstn",
            dstchannel=callee.name,
            lastapp="Dial",
            lastdata=dial,
            duration=(end - at).total_seconds(),
            billsec=(end - ans).total_seconds() if ans else 0,
            disposition="ANSWERED",
            clid=self._clid(caller.cid_name, caller.cid_num),
        )
        return self._finish(
            rec,
            last,
            [cdr],
            scenario="answered",
            direction="i",
            disposition="ANSWERED",
            answered=True,
            src_number=caller.cid_num,
            dst_number=did,
            answered_by=ext,
            transfers=0,
            queue="",
            recording=recording,
            answer_time=ans,
        )

    def _failed_dial(self, at: datetime, busy: bool) -> SimCall:
        rec = self._Rec(self, at)
        caller, did = self._inbound_caller(at)
        ext = self._ext()
        dial = f"SIP/{ext},15,tT"
        callee, _, _, dial_end = self._two_party(at, caller, ext, dial, False, busy, rec)
        rec.ev("APP_END", caller)
        caller.app = ("", "")
        status, cause = ("BUSY", 17) if busy else ("NOANSWER", 16)
        rec.ev("HANGUP", caller, extra=self._hangup_extra(cause, "dialplan/builtin", status))
        rec.ev("CHAN_END", caller, same_time=True)
        disp = "BUSY" if busy else "NO ANSWER"
        clid = self._clid(caller.cid_name, caller.cid_num)
        cdrs = [
            self._cdr(
                at,
                caller,
                src=caller.cid_num,
                dst=did,
                dcontext="from-pstn",
                dstchannel=callee.name,
                lastapp="Dial",
                lastdata=dial,
                duration=(dial_end - at).total_seconds(),
                billsec=0,
                disposition=disp,
                clid=clid,
                seq_step=2,
            ),
            self._cdr(
                dial_end,
                caller,
                src=caller.cid_num,
                dst=did,
                dcontext="from-pstn",
                dstchannel="",
                lastapp="Hangup",
                lastdata="",
                duration=0,
                billsec=0,
                disposition=disp,
                clid=clid,
            ),
        ]
        return self._finish(
            rec,
            caller,
            cdrs,
            scenario="busy" if busy else "unanswered",
            direction="i",
            disposition=disp,
            answered=False,
            src_number=caller.cid_num,
            dst_number=did,
            answered_by="",
            transfers=0,
            queue="",
            recording="",
            answer_time=None,
        )

    def _unanswered(self, at: datetime) -> SimCall:
        return self._failed_dial(at, busy=False)

    def _busy(self, at: datetime) -> SimCall:
        return self._failed_dial(at, busy=True)

    def _internal(self, at: datetime) -> SimCall:
        rec = self._Rec(self, at)
        src_ext = self._ext()
        dst_ext = self._ext(exclude=(src_ext,))
        caller = self._chan(
            src_ext, at, None, self.extensions[src_ext], src_ext, dst_ext, "internal"
        )
        dial = f"SIP/{dst_ext},20,tT"
        callee, ans, _, _ = self._two_party(at, caller, dst_ext, dial, True, False, rec)
        last = self._bridge_and_end(rec, caller, callee, self._uuid(), self.rng.random() < 0.6)
        end = rec.t
        cdr = self._cdr(
            at,
            caller,
            src=src_ext,
            dst=dst_ext,
            dcontext="internal",
            dstchannel=callee.name,
            lastapp="Dial",
            lastdata=dial,
            duration=(end - at).total_seconds(),
            billsec=(end - ans).total_seconds() if ans else 0,
            disposition="ANSWERED",
            clid=self._clid(caller.cid_name, src_ext),
        )
        return self._finish(
            rec,
            last,
            [cdr],
            scenario="internal",
            direction="x",
            disposition="ANSWERED",
            answered=True,
            src_number=src_ext,
            dst_number=dst_ext,
            answered_by=dst_ext,
            transfers=0,
            queue="",
            recording="",
            answer_time=ans,
        )

    def _outbound(self, at: datetime) -> SimCall:
        rec = self._Rec(self, at)
        src_ext = self._ext()
        _, number = self._external()
        caller = self._chan(
            src_ext, at, None, self.extensions[src_ext], src_ext, number, "internal"
        )
        dial = f"SIP/pstn-out/{number},60,tT"
        callee, ans, _, _ = self._two_party(
            at,
            caller,
            number,
            dial,
            True,
            False,
            rec,
            callee_peer="pstn-out",
            callee_name="",
            callee_num=number,
        )
        last = self._bridge_and_end(rec, caller, callee, self._uuid(), self.rng.random() < 0.5)
        end = rec.t
        cdr = self._cdr(
            at,
            caller,
            src=src_ext,
            dst=number,
            dcontext="internal",
            dstchannel=callee.name,
            lastapp="Dial",
            lastdata=dial,
            duration=(end - at).total_seconds(),
            billsec=(end - ans).total_seconds() if ans else 0,
            disposition="ANSWERED",
            clid=self._clid(caller.cid_name, src_ext),
        )
        return self._finish(
            rec,
            last,
            [cdr],
            scenario="outbound",
            direction="o",
            disposition="ANSWERED",
            answered=True,
            src_number=src_ext,
            dst_number=number,
            answered_by="",
            transfers=0,
            queue="",
            recording="",
            answer_time=ans,
        )

    def _blind_transfer(self, at: datetime) -> SimCall:
        """Sample (g): 101 answers, blind-transfers the caller to 104, 104 answers."""
        rec = self._Rec(self, at)
        caller, did = self._inbound_caller(at)
        first = self._ext()
        target = self._ext(exclude=(first,))
        dial1 = f"SIP/{first},20,tT"
        callee, ans, _, _ = self._two_party(at, caller, first, dial1, True, False, rec)
        bridge = self._uuid()
        bx = rec.bridge_extra(bridge)
        rec.ev("BRIDGE_ENTER", callee, exten="", extra=bx)
        rec.ev("BRIDGE_ENTER", caller, peer=callee.name, extra=bx)
        rec.tick(self._uniform(self.talk) / 3 + 1)
        rec.ev(
            "BLINDTRANSFER",
            callee,
            exten="",
            extra=_json(
                {
                    "extension": target,
                    "context": "internal",
                    "bridge_id": bridge,
                    "transferee_channel_name": caller.name,
                    "transferee_channel_uniqueid": caller.uniqueid,
                }
            ),
        )
        caller.exten, caller.context = target, "internal"
        rec.ev("BRIDGE_EXIT", caller, extra=bx)
        rec.ev("BRIDGE_EXIT", callee, exten="", extra=bx, same_time=True)
        first_leg_end = rec.t
        rec.ev("APP_END", caller)
        rec.ev("HANGUP", callee, exten="", extra=self._hangup_extra(16, "", ""))
        rec.ev("CHAN_END", callee, exten="", same_time=True)
        dial2 = f"SIP/{target},20,tT"
        caller.app = ("Dial", dial2)
        rec.ev("APP_START", caller)
        second_start = rec.t
        callee2 = self._chan(
            target, rec.t, caller.linkedid, self.extensions[target], target, "s", "internal"
        )
        rec.ev("CHAN_START", callee2)
        callee2.ani = target
        callee2.app = ("AppDial", "(Outgoing Line)")
        rec.tick(self._uniform(self.ring))
        rec.ev("ANSWER", callee2, exten=target, same_time=True)
        bridge2 = self._uuid()
        bx2 = rec.bridge_extra(bridge2)
        rec.ev("BRIDGE_ENTER", callee2, exten="", extra=bx2)
        rec.ev("BRIDGE_ENTER", caller, peer=callee2.name, extra=bx2)
        rec.tick(self._uniform(self.talk))
        rec.ev("BRIDGE_EXIT", caller, extra=bx2, same_time=True)
        rec.ev("BRIDGE_EXIT", callee2, exten="", extra=bx2)
        rec.ev("APP_END", caller, same_time=True)
        caller.app = ("", "")
        rec.ev(
            "HANGUP", caller, extra=self._hangup_extra(16, caller.name, "ANSWER"), same_time=True
        )
        rec.ev("CHAN_END", caller, same_time=True)
        rec.ev("HANGUP", callee2, exten="", extra=self._hangup_extra(16, caller.name, ""))
        rec.ev("CHAN_END", callee2, exten="", same_time=True)
        end = rec.t
        clid = self._clid(caller.cid_name, caller.cid_num)
        # Asterisk rewrote dst/dcontext of both CDRs to the transfer target.
        cdrs = [
            self._cdr(
                at,
                caller,
                src=caller.cid_num,
                dst=target,
                dcontext="internal",
                dstchannel=callee.name,
                lastapp="Dial",
                lastdata=dial1,
                duration=(first_leg_end - at).total_seconds(),
                billsec=(first_leg_end - ans).total_seconds() if ans else 0,
                disposition="ANSWERED",
                clid=clid,
                seq_step=2,
            ),
            self._cdr(
                second_start,
                caller,
                src=caller.cid_num,
                dst=target,
                dcontext="internal",
                dstchannel=callee2.name,
                lastapp="Dial",
                lastdata=dial2,
                duration=(end - second_start).total_seconds(),
                billsec=(end - second_start).total_seconds(),
                disposition="ANSWERED",
                clid=clid,
            ),
        ]
        return self._finish(
            rec,
            callee2,
            cdrs,
            scenario="blind_transfer",
            direction="i",
            disposition="ANSWERED",
            answered=True,
            src_number=caller.cid_num,
            dst_number=did,
            answered_by=target,
            transfers=1,
            queue="",
            recording="",
            answer_time=ans,
        )

    def _queue(self, at: datetime) -> SimCall:
        """Queue() answers the caller, rings a member through a Local/…/n pair."""
        rec = self._Rec(self, at)
        caller, did = self._inbound_caller(at)
        qname = self.rng.choice(_QUEUES)
        member = self._ext()
        qdata = f"{qname},t,,,300"
        rec.ev("CHAN_START", caller, same_time=True)
        caller.ani, caller.dnid = caller.cid_num, caller.exten
        caller.app = ("Queue", qdata)
        rec.ev("APP_START", caller)
        rec.ev("ANSWER", caller)
        caller_answer = rec.t
        rec.tick(self._uniform(self.ring))  # hold music before a member is tried
        one, two = self._local_pair(member, "from-queue", rec.t, caller.linkedid)
        one.cid_name, one.cid_num = caller.cid_name, caller.cid_num
        two.cid_name, two.cid_num = caller.cid_name, caller.cid_num
        rec.ev("CHAN_START", one)
        rec.ev("CHAN_START", two, same_time=True)
        two_start = rec.t
        one.ani, two.ani = caller.cid_num, caller.cid_num
        one.app = ("AppQueue", "(Outgoing Line)")
        mdial = f"SIP/{member},,tT"
        two.app = ("Dial", mdial)
        rec.ev("APP_START", two)
        phone = self._chan(
            member, rec.t, caller.linkedid, self.extensions[member], member, "s", "from-queue"
        )
        rec.ev("CHAN_START", phone)
        phone.ani = member
        phone.app = ("AppDial", "(Outgoing Line)")
        rec.tick(self._uniform(self.ring))
        rec.ev("ANSWER", phone, exten=member, same_time=True)
        member_answer = rec.t
        rec.ev("ANSWER", two)
        b1, b2 = self._uuid(), self._uuid()
        bx1, bx2 = rec.bridge_extra(b1), rec.bridge_extra(b2)
        rec.ev("BRIDGE_ENTER", phone, exten="", extra=bx1)
        rec.ev("BRIDGE_ENTER", two, peer=phone.name, extra=bx1)
        rec.ev("ANSWER", one)
        rec.ev("BRIDGE_ENTER", one, extra=bx2)
        rec.ev("BRIDGE_ENTER", caller, peer=one.name, extra=bx2)
        rec.tick(self._uniform(self.talk))
        src = caller.name
        rec.ev("BRIDGE_EXIT", caller, peer=one.name, extra=bx2, same_time=True)
        rec.ev("BRIDGE_EXIT", one, extra=bx2)
        rec.ev("HANGUP", one, extra=self._hangup_extra(16, src, ""))
        rec.ev("CHAN_END", one, same_time=True)
        rec.ev("BRIDGE_EXIT", two, peer=phone.name, extra=bx1)
        rec.ev("BRIDGE_EXIT", phone, exten="", extra=bx1)
        rec.ev("HANGUP", phone, exten="", extra=self._hangup_extra(16, src, ""))
        rec.ev("CHAN_END", phone, exten="", same_time=True)
        rec.ev("APP_END", two)
        two.app = ("", "")
        rec.ev("HANGUP", two, extra=self._hangup_extra(16, src, "ANSWER"), same_time=True)
        rec.ev("CHAN_END", two, same_time=True)
        rec.ev("APP_END", caller)
        caller.app = ("", "")
        rec.ev("HANGUP", caller, extra=self._hangup_extra(16, src, ""), same_time=True)
        rec.ev("CHAN_END", caller, same_time=True)
        end = rec.t
        clid = self._clid(caller.cid_name, caller.cid_num)
        cdrs = [
            self._cdr(
                at,
                caller,
                src=caller.cid_num,
                dst=did,
                dcontext="from-pstn",
                dstchannel=one.name,
                lastapp="Queue",
                lastdata=qdata,
                duration=(end - at).total_seconds(),
                billsec=(end - caller_answer).total_seconds(),
                disposition="ANSWERED",
                clid=clid,
                seq_step=2,
            ),
            self._cdr(
                two_start,
                two,
                src=caller.cid_num,
                dst=member,
                dcontext="from-queue",
                dstchannel=phone.name,
                lastapp="Dial",
                lastdata=mdial,
                duration=(end - two_start).total_seconds(),
                billsec=(end - member_answer).total_seconds(),
                disposition="ANSWERED",
                clid=clid,
            ),
        ]
        return self._finish(
            rec,
            caller,
            cdrs,
            scenario="queue",
            direction="i",
            disposition="ANSWERED",
            answered=True,
            src_number=caller.cid_num,
            dst_number=did,
            answered_by=member,
            transfers=0,
            queue=qname,
            recording="",
            answer_time=member_answer,
        )


def timeline(calls: Iterable[SimCall], late_cdr_seconds: float = 0.0) -> list[Write]:
    """Every row of `calls` as the PBX commits it, in commit order.

    CEL rows are written at their eventtime; CDR rows when the call ends (plus
    `late_cdr_seconds`, as with cdr.conf batch mode)."""
    out: list[Write] = []
    for c in calls:
        lid = c.expected.linkedid
        for r in c.cels:
            out.append(Write(r["eventtime"], "cel", r, lid))
        late = timedelta(seconds=late_cdr_seconds)
        for r in c.cdrs:
            out.append(Write(c.cdr_written_at + late, "cdr", r, lid))
    out.sort(key=lambda w: w.at)
    return [Write(w.at, w.kind, w.row, w.linkedid, i) for i, w in enumerate(out)]


# ---------------------------------------------------------------------------
# Writers: rows -> the PBX tables (sqlite3, DB-API, asyncpg, aiomysql, aiosqlite)
# ---------------------------------------------------------------------------


def _columns(kind: str) -> tuple[str, ...]:
    from .model import CDR_COLUMNS, CEL_COLUMNS

    return CEL_COLUMNS if kind == "cel" else CDR_COLUMNS


def db_values(kind: str, row: Mapping[str, Any], dialect: str, tz: str = "UTC") -> tuple[Any, ...]:
    """A row dict -> the tuple of column values as the PBX's driver would write them.

    Times become naive PBX-local time (`tz`): datetime for PostgreSQL, datetime with
    whole seconds for MySQL/MariaDB DATETIME, text `YYYY-MM-DD HH:MM:SS[.ffffff]` for
    SQLite (cel_sqlite3_custom)."""
    zone = ZoneInfo(tz)
    out: list[Any] = []
    for col in _columns(kind):
        v = row.get(col)
        if isinstance(v, datetime):
            local = v.astimezone(zone).replace(tzinfo=None)
            if dialect == "mysql":
                local = local.replace(microsecond=0)
            if dialect == "sqlite":
                v = local.isoformat(
                    sep=" ", timespec="microseconds" if local.microsecond else "seconds"
                )
            else:
                v = local
        out.append(v)
    return tuple(out)


def insert_sql(dialect: str, kind: str, table: str, paramstyle: str | None = None) -> str:
    """INSERT statement for one row. paramstyle: qmark (sqlite3), format (%s: aiomysql,
    psycopg), numeric ($1: asyncpg); default per dialect."""
    cols = _columns(kind)
    style = paramstyle or {"sqlite": "qmark", "mysql": "format", "postgresql": "numeric"}[dialect]
    if style == "qmark":
        ph = ", ".join("?" for _ in cols)
    elif style == "format":
        ph = ", ".join("%s" for _ in cols)
    else:
        ph = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({ph})"


def _runs(writes: Sequence[Write]) -> Iterator[tuple[str, list[Write]]]:
    """Consecutive writes of the same table (keeps commit order across tables)."""
    batch: list[Write] = []
    for w in writes:
        if batch and batch[-1].kind != w.kind:
            yield batch[0].kind, batch
            batch = []
        batch.append(w)
    if batch:
        yield batch[0].kind, batch


def write_dbapi(
    conn: Any,
    dialect: str,
    writes: Sequence[Write],
    *,
    cdr_table: str = "cdr",
    cel_table: str = "cel",
    tz: str = "UTC",
    paramstyle: str | None = None,
    commit: bool = True,
) -> None:
    """Write rows through any DB-API 2 connection (sqlite3, pymysql, psycopg...)."""
    cur = conn.cursor()
    for kind, batch in _runs(writes):
        table = cel_table if kind == "cel" else cdr_table
        sql = insert_sql(dialect, kind, table, paramstyle)
        cur.executemany(sql, [db_values(kind, w.row, dialect, tz) for w in batch])
    if commit:
        conn.commit()


def create_sqlite_pbx(path: str, *, cdr_table: str = "cdr", cel_table: str = "cel") -> None:
    """Create a SQLite PBX database (WAL, so a reader never blocks the writer)."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        for stmt in create_table_statements("sqlite", cdr_table, cel_table):
            conn.execute(stmt.replace("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS "))
        conn.commit()


def write_sqlite(
    path: str,
    writes: Sequence[Write],
    *,
    cdr_table: str = "cdr",
    cel_table: str = "cel",
    tz: str = "UTC",
) -> None:
    """Append rows to a SQLite PBX database (one transaction)."""
    with closing(sqlite3.connect(path, timeout=30)) as conn:
        write_dbapi(conn, "sqlite", writes, cdr_table=cdr_table, cel_table=cel_table, tz=tz)


class AsyncPbxWriter:
    """Async writer over asyncpg / aiomysql / aiosqlite connections (tests, benches).

    `await AsyncPbxWriter.connect("postgresql", dsn=...)`, or wrap a connection you own
    with `AsyncPbxWriter(dialect, conn)`. `write()` commits one transaction per call."""

    def __init__(
        self,
        dialect: str,
        conn: Any,
        *,
        cdr_table: str = "cdr",
        cel_table: str = "cel",
        tz: str = "UTC",
        owns: bool = False,
    ) -> None:
        self.dialect = dialect
        self.conn = conn
        self.cdr_table = cdr_table
        self.cel_table = cel_table
        self.tz = tz
        self.owns = owns

    @classmethod
    async def connect(cls, dialect: str, **params: Any) -> AsyncPbxWriter:
        """postgresql: asyncpg.connect(**params); mysql: aiomysql.connect(**params);
        sqlite: aiosqlite.connect(params['database']). Table/tz keywords are taken out."""
        opts = {k: params.pop(k) for k in ("cdr_table", "cel_table", "tz") if k in params}
        conn: Any
        if dialect == "postgresql":
            import asyncpg

            conn = await asyncpg.connect(**params)
        elif dialect == "mysql":
            import aiomysql

            conn = await aiomysql.connect(autocommit=False, **params)
        elif dialect == "sqlite":
            import aiosqlite

            conn = await aiosqlite.connect(params["database"], timeout=30)
        else:
            raise ValueError(f"unknown dialect {dialect!r}")
        return cls(dialect, conn, owns=True, **opts)

    async def create_tables(self) -> None:
        stmts = create_table_statements(self.dialect, self.cdr_table, self.cel_table)
        for stmt in stmts:
            try:
                await self.execute(stmt)
            except Exception as e:  # index already exists (re-runs): fine
                if "exist" not in str(e).lower() and "duplicate" not in str(e).lower():
                    raise

    async def execute(self, sql: str, *args: Any) -> None:
        if self.dialect == "postgresql":
            await self.conn.execute(sql, *args)
        elif self.dialect == "mysql":
            async with self.conn.cursor() as cur:
                await cur.execute(sql, args or None)
            await self.conn.commit()
        else:
            await self.conn.execute(sql, args)
            await self.conn.commit()

    async def write(self, writes: Sequence[Write]) -> None:
        if not writes:
            return
        if self.dialect == "postgresql":
            async with self.conn.transaction():
                for kind, batch in _runs(writes):
                    table = self.cel_table if kind == "cel" else self.cdr_table
                    await self.conn.executemany(
                        insert_sql("postgresql", kind, table),
                        [db_values(kind, w.row, "postgresql", self.tz) for w in batch],
                    )
        elif self.dialect == "mysql":
            async with self.conn.cursor() as cur:
                for kind, batch in _runs(writes):
                    table = self.cel_table if kind == "cel" else self.cdr_table
                    await cur.executemany(
                        insert_sql("mysql", kind, table),
                        [db_values(kind, w.row, "mysql", self.tz) for w in batch],
                    )
            await self.conn.commit()
        else:
            for kind, batch in _runs(writes):
                table = self.cel_table if kind == "cel" else self.cdr_table
                await self.conn.executemany(
                    insert_sql("sqlite", kind, table),
                    [db_values(kind, w.row, "sqlite", self.tz) for w in batch],
                )
            await self.conn.commit()

    async def close(self) -> None:
        if self.owns:
            res = self.conn.close()
            if asyncio.iscoroutine(res):
                await res


async def play(
    writes: Sequence[Write],
    write: Callable[[Sequence[Write]], Awaitable[None]],
    *,
    t0: datetime | None = None,
    speed: float = 1.0,
    tick: float = 0.02,
    stop: asyncio.Event | None = None,
    committed: dict[str, float] | None = None,
    mark: Callable[[Write], bool] | None = None,
) -> dict[str, float]:
    """Commit `writes` in real time: a row whose `at` is t0 + x is written x/speed
    seconds after the call (batched per `tick`). Returns, per linkedid, the wall
    clock (time.time()) at which its last row was committed — the start of the
    end-to-end latency of that call. Pass `committed` to watch it fill up live, and
    `mark` to time only some rows (e.g. `is_linkedid_end`)."""
    last_commit: dict[str, float] = committed if committed is not None else {}
    if not writes:
        return last_commit
    base = t0 or writes[0].at
    wall0 = time.time()
    i = 0
    n = len(writes)
    while i < n:
        if stop is not None and stop.is_set():
            break
        elapsed = (time.time() - wall0) * speed
        horizon = base + timedelta(seconds=elapsed)
        j = i
        while j < n and writes[j].at <= horizon:
            j += 1
        if j > i:
            batch = writes[i:j]
            await write(batch)
            done = time.time()
            for w in batch:
                if mark is None or mark(w):
                    last_commit[w.linkedid] = done
            i = j
            continue
        wait = ((writes[i].at - base).total_seconds() / speed) - (time.time() - wall0)
        await asyncio.sleep(min(max(wait, 0.0), tick) if wait > 0 else 0)
    return last_commit


def is_linkedid_end(w: Write) -> bool:
    return w.kind == "cel" and w.row.get("eventtype") == "LINKEDID_END"


def shift(calls: Sequence[SimCall], start: datetime) -> list[SimCall]:
    """The same calls moved so that the first starts at `start` (uniqueids unchanged)."""
    if not calls:
        return []
    delta = start - min(c.expected.start for c in calls)
    out = []
    for c in calls:
        e = c.expected
        exp = ExpectedCall(
            **{
                **{f: getattr(e, f) for f in e.__dataclass_fields__},
                "start": e.start + delta,
                "end": e.end + delta,
                "answer_time": e.answer_time + delta if e.answer_time else None,
            }
        )
        cels = [{**r, "eventtime": r["eventtime"] + delta} for r in c.cels]
        cdrs = [{**r, "calldate": r["calldate"] + delta} for r in c.cdrs]
        out.append(SimCall(exp, cels, cdrs, c.cdr_written_at + delta))
    return out
