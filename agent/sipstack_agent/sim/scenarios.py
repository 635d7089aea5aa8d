"""The call scenarios: which ones exist, their default mix, and the direct dials.

A scenario is a function `(generator, start) -> SimCall` building one call's
CEL rows (through a `Recorder`), its CDR rows and the `ExpectedCall`:
answered, unanswered and busy inbound calls, internal and outbound calls here;
the calls routed past their first callee (blind transfer, queue) in sim.routed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from .channels import Recorder
from .routed import blind_transfer, queue
from .timeline import SimCall

if TYPE_CHECKING:
    from .traffic import TrafficGenerator

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


def answered(gen: TrafficGenerator, at: datetime) -> SimCall:
    rec = Recorder(gen, at)
    caller, did = gen.inbound_caller(at)
    ext = gen.ext()
    recording = ""
    if gen.rng.random() < gen.recording_ratio:
        stamp = at.strftime("%Y%m%d-%H%M%S")
        recording = f"in-{did}-{caller.cid_num}-{stamp}-{caller.uniqueid}.wav"
    dial = f"SIP/{ext},20,tT"
    callee, ans, _, _ = gen.two_party(at, caller, ext, dial, True, False, rec, recording=recording)
    last = gen.bridge_and_end(rec, caller, callee, gen.new_uuid(), gen.rng.random() < 0.6)
    end = rec.t
    cdr = gen.cdr(
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
        clid=gen.clid(caller.cid_name, caller.cid_num),
    )
    return gen.finish(
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


def _failed_dial(gen: TrafficGenerator, at: datetime, busy: bool) -> SimCall:
    rec = Recorder(gen, at)
    caller, did = gen.inbound_caller(at)
    ext = gen.ext()
    dial = f"SIP/{ext},15,tT"
    callee, _, _, dial_end = gen.two_party(at, caller, ext, dial, False, busy, rec)
    rec.ev("APP_END", caller)
    caller.app = ("", "")
    status, cause = ("BUSY", 17) if busy else ("NOANSWER", 16)
    rec.ev("HANGUP", caller, extra=gen.hangup_extra(cause, "dialplan/builtin", status))
    rec.ev("CHAN_END", caller, same_time=True)
    disp = "BUSY" if busy else "NO ANSWER"
    clid = gen.clid(caller.cid_name, caller.cid_num)
    cdrs = [
        gen.cdr(
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
        gen.cdr(
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
    return gen.finish(
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


def unanswered(gen: TrafficGenerator, at: datetime) -> SimCall:
    return _failed_dial(gen, at, busy=False)


def busy(gen: TrafficGenerator, at: datetime) -> SimCall:
    return _failed_dial(gen, at, busy=True)


def internal(gen: TrafficGenerator, at: datetime) -> SimCall:
    rec = Recorder(gen, at)
    src_ext = gen.ext()
    dst_ext = gen.ext(exclude=(src_ext,))
    caller = gen.chan(src_ext, at, None, gen.extensions[src_ext], src_ext, dst_ext, "internal")
    dial = f"SIP/{dst_ext},20,tT"
    callee, ans, _, _ = gen.two_party(at, caller, dst_ext, dial, True, False, rec)
    last = gen.bridge_and_end(rec, caller, callee, gen.new_uuid(), gen.rng.random() < 0.6)
    end = rec.t
    cdr = gen.cdr(
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
        clid=gen.clid(caller.cid_name, src_ext),
    )
    return gen.finish(
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


def outbound(gen: TrafficGenerator, at: datetime) -> SimCall:
    rec = Recorder(gen, at)
    src_ext = gen.ext()
    _, number = gen.external()
    caller = gen.chan(src_ext, at, None, gen.extensions[src_ext], src_ext, number, "internal")
    dial = f"SIP/pstn-out/{number},60,tT"
    callee, ans, _, _ = gen.two_party(
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
    last = gen.bridge_and_end(rec, caller, callee, gen.new_uuid(), gen.rng.random() < 0.5)
    end = rec.t
    cdr = gen.cdr(
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
        clid=gen.clid(caller.cid_name, src_ext),
    )
    return gen.finish(
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


BUILDERS: dict[str, Callable[[TrafficGenerator, datetime], SimCall]] = {
    "answered": answered,
    "unanswered": unanswered,
    "busy": busy,
    "blind_transfer": blind_transfer,
    "queue": queue,
    "internal": internal,
    "outbound": outbound,
}
