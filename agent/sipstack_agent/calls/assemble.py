"""Rows of a call group -> `Call` (asterisk-data.md "What a call is").

- Rows are grouped by linkedid (an empty linkedid falls back to the uniqueid);
  linkedid groups that share a uniqueid are merged, transitively
  (`group_linkedids`). The key of a merged call is its smallest linkedid,
  Asterisk ids ("epoch.seq") compared numerically (`linkedid_sort_key`).
- Completion, CEL mode:
  * every linkedid of the group has LINKEDID_END and every channel seen in
    it has CHAN_END                 -> complete now ("linkedid_end");
  * no channel is up any more (each has CHAN_END or HANGUP) but a
    LINKEDID_END or a CHAN_END is missing (stock cel.conf, lost rows)
                                    -> complete after the idle timeout
                                       ("idle_timeout", or "linkedid_end" when
                                       every LINKEDID_END is there);
  * a channel is still up           -> not complete, whatever LINKEDID_END says.
  In pickups, parked-call retrieval and attended transfers Asterisk writes
  LINKEDID_END for a linkedid while one of its channels is still up: that
  channel moved to the caller's linkedid, and its last rows (BRIDGE_EXIT,
  HANGUP, CHAN_END) come later under that linkedid, which merges the two
  groups. So a linkedid whose channel is still up never completes as a call
  of its own; only CALL_MAX_AGE closes it when those rows never come.
- Completion, CDR only (or a call with no CEL row): complete when no new CDR
  activity for the idle timeout ("cdr_idle_timeout").
- No activity at all for CALL_MAX_AGE: force-completed ("max_age", forced).
- A call complete by the rules above is held (`held`, `wait_mark`) until every
  source has read past its end and SHIP_COMPLETE_AFTER has passed (settle.py).
- While the CDR table is read without ids (`CallSettings.cdr_wait` > 0), a call
  the CEL rules complete but that has no CDR row yet waits up to `cdr_wait`
  seconds after its rows last changed (`awaiting_cdr`): its CDR rows are being
  fetched by uniqueid. The first CDR row, or the end of the wait, completes it.

"Activity" is the newest event time of the rows, or the time the rows were
last seen to change (`rows_changed_at`, tracked by `evaluate`) when that is
older: a PBX clock running ahead (wrong DB_TIMEZONE) cannot hold calls back,
and a backfill of old rows completes at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from sipstack_agent.calls import derive as _derive
from sipstack_agent.calls import direction as _direction
from sipstack_agent.calls import settle as _settle
from sipstack_agent.calls import tenants as _tenants
from sipstack_agent.calls.types import Call, Channel
from sipstack_agent.config import CallSettings
from sipstack_agent.model import CdrRow, CelRow, RecordingFile
from sipstack_agent.rules.ids import group_pairs, linkedid_sort_key, smallest_linkedid


def group_linkedids(rows: Iterable[CelRow | CdrRow]) -> list[frozenset[str]]:
    """Linkedid groups of rows, merged when they share a uniqueid (transitively).

    Rows with neither linkedid nor uniqueid are ignored. Groups are returned
    ordered by their smallest linkedid.
    """
    return group_pairs((r.call_linkedid, r.uniqueid) for r in rows if r.call_linkedid)


def in_gaps(
    gaps: Sequence[tuple[datetime, datetime | None]],
    first_event: datetime,
    last_event: datetime,
    now: datetime,
) -> bool:
    """True when [first_event, last_event] overlaps a gap (an open gap ends at `now`)."""
    for start, end in gaps:
        g_start = _derive.utc(start)
        g_end = _derive.utc(end) if end is not None else now
        if first_event <= g_end and last_event >= g_start:
            return True
    return False


def _completion(
    cels: Sequence[CelRow],
    cdr_mode: bool,
    channels: Sequence[Channel],
    linkedids: Sequence[str],
    activity: datetime,
    now: datetime,
    settings: CallSettings,
    names: Sequence[str],
) -> tuple[bool, str, datetime | None]:
    """(complete, reason, idle_deadline) before the max-age rule."""
    idle = timedelta(seconds=max(0.0, settings.idle_timeout))
    deadline = activity + idle
    if cdr_mode:
        if now >= deadline:
            return True, "cdr_idle_timeout", None
        return False, "", deadline
    ended_lids = {
        r.call_linkedid for r, et in zip(cels, names, strict=True) if et == "LINKEDID_END"
    }
    all_lid_end = bool(linkedids) and all(lid in ended_lids for lid in linkedids)
    if all_lid_end and channels and all(c.chan_end for c in channels):
        return True, "linkedid_end", None
    if channels and all(c.hung_up for c in channels):
        if now >= deadline:
            return True, "linkedid_end" if all_lid_end else "idle_timeout", None
        return False, "", deadline
    return False, "", None


def assemble(
    cels: Sequence[CelRow],
    cdrs: Sequence[CdrRow],
    recordings: Sequence[RecordingFile],
    *,
    call_key: str,
    now: datetime,
    settings: CallSettings,
    rows_changed_at: datetime | None = None,
    identity_tenant: str = "",
    gaps: Sequence[tuple[datetime, datetime | None]] = (),
    watermark: datetime | None = None,
) -> Call:
    """Assemble the rows of one call group (already selected by the caller).

    `gaps` are the intervals in which the CEL feed was down (AMI has no replay):
    a call active during one may miss CEL rows, so it is flagged `gap` and
    completed from its CDR rows (idle timeout after they arrive) instead of by
    the CEL rules.

    `watermark` is the lowest watermark of the sources (settle.low_watermark;
    None = not tracked): a call complete by its rows is held until it has
    passed the call's settle point.
    """
    now = _derive.utc(now)
    scels: tuple[CelRow, ...] = () if settings.cdr_only else _derive.sort_cels(cels)
    scdrs = _derive.sort_cdrs(cdrs)
    lids = {r.call_linkedid for r in scels if r.call_linkedid}
    lids.update(c.call_linkedid for c in scdrs if c.call_linkedid)
    if not lids and call_key:
        lids.add(call_key)
    linkedids = tuple(sorted(lids, key=linkedid_sort_key))
    key = call_key or smallest_linkedid(linkedids)

    names = _derive.event_names(scels)  # once per call: every rule below takes them
    channels = _derive.build_channels(scels, scdrs, settings.direction, names)
    d = _derive.derive(scels, scdrs, channels, linkedids, settings.direction, names)

    activity = d.last_event
    if rows_changed_at is not None:
        activity = min(activity, _derive.utc(rows_changed_at))
    cdr_mode = settings.cdr_only or not scels
    all_ended = bool(channels) and all(c.hung_up for c in channels)
    # A call whose channels have not all ended was (possibly) active until now.
    in_gap = in_gaps(gaps, d.start, d.last_event if all_ended else now, now)
    if in_gap and not cdr_mode:
        # CEL rows may be missing: only the CDR rows (written when legs end) can close it.
        if scdrs:
            complete, reason, idle_deadline = _completion(
                scels, True, channels, linkedids, activity, now, settings, names
            )
            reason = "gap_cdr_idle_timeout" if complete else reason
        else:
            complete, reason, idle_deadline = False, "", None
    else:
        complete, reason, idle_deadline = _completion(
            scels, cdr_mode, channels, linkedids, activity, now, settings, names
        )
    awaiting_cdr = False
    if complete and not cdr_mode and not scdrs and settings.cdr_wait > 0:
        # CDR rows of ended calls are being fetched (id-less CDR table): wait for them,
        # counted from when the rows last changed (a backlog waits as long as a live call).
        wait_until = _derive.utc(rows_changed_at or now) + timedelta(seconds=settings.cdr_wait)
        if now < wait_until:
            complete, reason, idle_deadline, awaiting_cdr = False, "", wait_until, True
    max_age_deadline = activity + timedelta(seconds=max(0.0, settings.max_age))
    forced = False
    if not complete and now >= max_age_deadline:
        complete, reason, forced, idle_deadline = True, "max_age", True, None
    held = False
    wait_mark: datetime | None = None
    if complete:
        h = _settle.hold(d.last_event, rows_changed_at, now, watermark, settings)
        if h.held:
            held, wait_mark, idle_deadline = True, h.wait_mark, h.wake_at
            complete, reason, forced = False, "", False
    if complete and d.end is None:
        d = replace(d, end=d.last_event)

    # Direction.
    o, dest = d.origin, d.destination
    src_party = _direction.Party(
        channel=o.name if o else "",
        kind=o.kind if o else "",
        number=d.src_number,
        context=(o.context if o else "") or (scdrs[0].dcontext if scdrs else ""),
    )
    dst_party = _direction.Party(
        channel=dest.name if dest else "",
        kind=dest.kind if dest else "",
        number=d.dst_number,
        context=dest.context if dest else "",
    )
    direction, direction_reason = _direction.decide(src_party, dst_party, settings.direction)

    # Tenant (the candidates collected only when a map or pattern will read them).
    if _tenants.reads_candidates(settings.tenants, fixed=identity_tenant):
        tenant, tenant_source = _tenants.detect_tenant(
            settings.tenants,
            fixed=identity_tenant,
            dids=[d.dnid, d.dst_number, *(_derive.cdr_extra(c, "did") for c in scdrs)],
            accountcodes=[*(r.accountcode for r in scels), *(c.accountcode for c in scdrs)],
            names=[
                *(r.context for r in scels),
                *(c.dcontext for c in scdrs),
                *(ch.name for ch in channels),
            ],
        )
    else:
        tenant, tenant_source = _tenants.detect_tenant(settings.tenants, fixed=identity_tenant)

    recs = _derive.merge_recordings(
        recordings,
        _derive.recordings_from_rows(scels, scdrs, settings.timezone, settings.monitor_dir, names),
    )
    return Call(
        call_key=key,
        linkedids=linkedids,
        cels=scels,
        cel_events=names,
        cdrs=scdrs,
        recordings=recs,
        channels=channels,
        derived=d,
        is_complete=complete,
        completion_reason=reason,
        forced=forced,
        last_activity=activity,
        idle_deadline=idle_deadline,
        max_age_deadline=max_age_deadline,
        direction=direction,
        direction_reason=direction_reason,
        tenant=tenant,
        tenant_source=tenant_source,
        cdr_only=cdr_mode,
        gap=in_gap,
        timezone=settings.timezone,
        timezone_source=settings.timezone_source,
        held=held,
        wait_mark=wait_mark,
        awaiting_cdr=awaiting_cdr,
    )
