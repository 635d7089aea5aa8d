"""The routed call scenarios: a blind transfer, and a queue ringing a member through
a Local channel pair (sample (g) and Queue() of the Asterisk 20 capture)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from .channels import Recorder, json_text
from .timeline import SimCall

if TYPE_CHECKING:
    from .traffic import TrafficGenerator

QUEUES = ("support", "sales", "billing")


def blind_transfer(gen: TrafficGenerator, at: datetime) -> SimCall:
    """Sample (g): 101 answers, blind-transfers the caller to 104, 104 answers."""
    rec = Recorder(gen, at)
    caller, did = gen.inbound_caller(at)
    first = gen.ext()
    target = gen.ext(exclude=(first,))
    dial1 = f"SIP/{first},20,tT"
    callee, ans, _, _ = gen.two_party(at, caller, first, dial1, True, False, rec)
    bridge = gen.new_uuid()
    bx = rec.bridge_extra(bridge)
    rec.ev("BRIDGE_ENTER", callee, exten="", extra=bx)
    rec.ev("BRIDGE_ENTER", caller, peer=callee.name, extra=bx)
    rec.tick(gen.uniform(gen.talk) / 3 + 1)
    rec.ev(
        "BLINDTRANSFER",
        callee,
        exten="",
        extra=json_text(
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
    rec.ev("HANGUP", callee, exten="", extra=gen.hangup_extra(16, "", ""))
    rec.ev("CHAN_END", callee, exten="", same_time=True)
    dial2 = f"SIP/{target},20,tT"
    caller.app = ("Dial", dial2)
    rec.ev("APP_START", caller)
    second_start = rec.t
    callee2 = gen.chan(
        target, rec.t, caller.linkedid, gen.extensions[target], target, "s", "internal"
    )
    rec.ev("CHAN_START", callee2)
    callee2.ani = target
    callee2.app = ("AppDial", "(Outgoing Line)")
    rec.tick(gen.uniform(gen.ring))
    rec.ev("ANSWER", callee2, exten=target, same_time=True)
    bridge2 = gen.new_uuid()
    bx2 = rec.bridge_extra(bridge2)
    rec.ev("BRIDGE_ENTER", callee2, exten="", extra=bx2)
    rec.ev("BRIDGE_ENTER", caller, peer=callee2.name, extra=bx2)
    rec.tick(gen.uniform(gen.talk))
    rec.ev("BRIDGE_EXIT", caller, extra=bx2, same_time=True)
    rec.ev("BRIDGE_EXIT", callee2, exten="", extra=bx2)
    rec.ev("APP_END", caller, same_time=True)
    caller.app = ("", "")
    rec.ev("HANGUP", caller, extra=gen.hangup_extra(16, caller.name, "ANSWER"), same_time=True)
    rec.ev("CHAN_END", caller, same_time=True)
    rec.ev("HANGUP", callee2, exten="", extra=gen.hangup_extra(16, caller.name, ""))
    rec.ev("CHAN_END", callee2, exten="", same_time=True)
    end = rec.t
    clid = gen.clid(caller.cid_name, caller.cid_num)
    # Asterisk rewrote dst/dcontext of both CDRs to the transfer target.
    cdrs = [
        gen.cdr(
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
        gen.cdr(
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
    return gen.finish(
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


def queue(gen: TrafficGenerator, at: datetime) -> SimCall:
    """Queue() answers the caller, rings a member through a Local/…/n pair."""
    rec = Recorder(gen, at)
    caller, did = gen.inbound_caller(at)
    qname = gen.rng.choice(QUEUES)
    member = gen.ext()
    qdata = f"{qname},t,,,300"
    rec.ev("CHAN_START", caller, same_time=True)
    caller.ani, caller.dnid = caller.cid_num, caller.exten
    caller.app = ("Queue", qdata)
    rec.ev("APP_START", caller)
    rec.ev("ANSWER", caller)
    caller_answer = rec.t
    rec.tick(gen.uniform(gen.ring))  # hold music before a member is tried
    one, two = gen.local_pair(member, "from-queue", rec.t, caller.linkedid)
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
    phone = gen.chan(
        member, rec.t, caller.linkedid, gen.extensions[member], member, "s", "from-queue"
    )
    rec.ev("CHAN_START", phone)
    phone.ani = member
    phone.app = ("AppDial", "(Outgoing Line)")
    rec.tick(gen.uniform(gen.ring))
    rec.ev("ANSWER", phone, exten=member, same_time=True)
    member_answer = rec.t
    rec.ev("ANSWER", two)
    b1, b2 = gen.new_uuid(), gen.new_uuid()
    bx1, bx2 = rec.bridge_extra(b1), rec.bridge_extra(b2)
    rec.ev("BRIDGE_ENTER", phone, exten="", extra=bx1)
    rec.ev("BRIDGE_ENTER", two, peer=phone.name, extra=bx1)
    rec.ev("ANSWER", one)
    rec.ev("BRIDGE_ENTER", one, extra=bx2)
    rec.ev("BRIDGE_ENTER", caller, peer=one.name, extra=bx2)
    rec.tick(gen.uniform(gen.talk))
    src = caller.name
    rec.ev("BRIDGE_EXIT", caller, peer=one.name, extra=bx2, same_time=True)
    rec.ev("BRIDGE_EXIT", one, extra=bx2)
    rec.ev("HANGUP", one, extra=gen.hangup_extra(16, src, ""))
    rec.ev("CHAN_END", one, same_time=True)
    rec.ev("BRIDGE_EXIT", two, peer=phone.name, extra=bx1)
    rec.ev("BRIDGE_EXIT", phone, exten="", extra=bx1)
    rec.ev("HANGUP", phone, exten="", extra=gen.hangup_extra(16, src, ""))
    rec.ev("CHAN_END", phone, exten="", same_time=True)
    rec.ev("APP_END", two)
    two.app = ("", "")
    rec.ev("HANGUP", two, extra=gen.hangup_extra(16, src, "ANSWER"), same_time=True)
    rec.ev("CHAN_END", two, same_time=True)
    rec.ev("APP_END", caller)
    caller.app = ("", "")
    rec.ev("HANGUP", caller, extra=gen.hangup_extra(16, src, ""), same_time=True)
    rec.ev("CHAN_END", caller, same_time=True)
    end = rec.t
    clid = gen.clid(caller.cid_name, caller.cid_num)
    cdrs = [
        gen.cdr(
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
        gen.cdr(
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
    return gen.finish(
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
