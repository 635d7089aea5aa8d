"""Channel classification and call direction (asterisk-data.md "Direction").

1. Each channel is a trunk, an extension, a Local/ channel or "other":
   - Local/... is never a party;
   - a name matching KNOWN_TRUNKS (technology/peer or peer) is a trunk;
   - DAHDI/, IAX2 and (PJ)SIP peers whose name is not an extension are trunks;
   - a SIP/PJSIP/IAX2/... peer whose name is all digits with an extension's
     length is an extension.
2. trunk -> extension: "i"; extension -> trunk: "o"; extension -> extension: "x".
3. Fallbacks by numbers, then by contexts (from-trunk, from-pstn, ... -> "i";
   from-internal with an external destination -> "o").

Every decision comes with a short human-readable `reason`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from sipstack_agent.calls import numbers
from sipstack_agent.config import DirectionSettings

TRUNK = "trunk"
EXTENSION = "extension"
LOCAL = "local"
OTHER = "other"

# Technologies whose channels are always lines to the outside world.
_TRUNK_TECHS = frozenset({"DAHDI", "ZAP", "MISDN", "DGV", "KHOMP", "WOOMERA", "OOH323", "H323"})
# Technologies that carry named peers (extension or trunk by name).
_PEER_TECHS = frozenset({"SIP", "PJSIP", "IAX2", "IAX", "SKINNY", "SCCP", "MGCP", "UNISTIM"})
_SUFFIX = re.compile(r"-[0-9a-fA-F]{6,}$")
_IAX_SUFFIX = re.compile(r"-\d{1,5}$")
INBOUND_CONTEXTS = ("from-trunk", "from-pstn", "from-external", "from-did", "from-sip-external")
INTERNAL_CONTEXTS = ("from-internal", "internal", "from-phones", "default")


@dataclass(frozen=True, slots=True)
class ChannelName:
    tech: str  # "SIP", "PJSIP", "Local", "" when unknown
    peer: str  # peer / endpoint name, or for Local/ the extension before '@'
    context: str = ""  # Local/ only: the context after '@'


@lru_cache(maxsize=2048)  # a call's rules parse each of its channel names 3-4 times
def parse_channel(name: str) -> ChannelName:
    """`SIP/pstn-in-00000000` -> (SIP, pstn-in); `Local/104@internal-0001;2` -> (Local, 104)."""
    name = (name or "").strip()
    if "/" not in name:
        return ChannelName("", name)
    tech, rest = name.split("/", 1)
    if tech.lower() == "local":
        rest = rest.split(";", 1)[0]
        exten, _, ctx = rest.partition("@")
        return ChannelName("Local", exten, _SUFFIX.sub("", ctx))
    rest = rest.split(",", 1)[0]  # Dial strings: SIP/101,20,tT
    peer = _SUFFIX.sub("", rest)
    if tech.upper().startswith("IAX") and peer == rest:
        peer = _IAX_SUFFIX.sub("", rest)
    return ChannelName(tech, peer)


def _known_trunk(name: str, parsed: ChannelName, settings: DirectionSettings) -> bool:
    for t in settings.known_trunks:
        t = t.strip()
        if not t:
            continue
        if "/" in t:
            if name.lower().startswith(t.lower()) or (
                f"{parsed.tech}/{parsed.peer}".lower() == t.lower()
            ):
                return True
        elif parsed.peer.lower() == t.lower():
            return True
    return False


def classify_channel(name: str, settings: DirectionSettings) -> str:
    """trunk | extension | local | other."""
    parsed = parse_channel(name)
    if parsed.tech == "Local":
        return LOCAL
    if not parsed.tech:
        return OTHER
    if _known_trunk(name, parsed, settings):
        return TRUNK
    tech = parsed.tech.upper()
    if tech in _TRUNK_TECHS:
        return TRUNK
    if tech in _PEER_TECHS:
        if numbers.is_extension(parsed.peer, settings):
            return EXTENSION
        if parsed.peer:
            return TRUNK
    return OTHER


def party_label(name: str) -> str:
    """What to call the party on a channel: peer name, or the Local/ extension."""
    return parse_channel(name).peer


def _context_inbound(context: str) -> bool:
    c = context.lower()
    return any(c == x or c.startswith(x + "-") for x in INBOUND_CONTEXTS)


def _context_internal(context: str) -> bool:
    c = context.lower()
    return any(c == x or c.startswith(x + "-") for x in INTERNAL_CONTEXTS)


@dataclass(frozen=True, slots=True)
class Party:
    """The facts direction needs about one side of a call."""

    channel: str = ""
    kind: str = OTHER
    number: str = ""  # caller id number (source) or dialled number (destination)
    context: str = ""


def decide(src: Party, dst: Party, settings: DirectionSettings) -> tuple[str, str]:
    """(direction, reason) from the originating and destination parties."""
    s, d = src.kind, dst.kind
    sl = party_label(src.channel) or src.number
    dl = party_label(dst.channel) or dst.number
    if s == TRUNK and d == EXTENSION:
        return "i", f"channels: trunk {sl} -> extension {dl}"
    if s == EXTENSION and d == TRUNK:
        return "o", f"channels: extension {sl} -> trunk {dl}"
    if s == EXTENSION and d == EXTENSION:
        return "x", f"channels: extension {sl} -> extension {dl}"
    if s == TRUNK and d == TRUNK:
        return "i", f"channels: trunk {sl} -> trunk {dl} (forwarded inbound)"
    if s == TRUNK:
        return "i", f"channels: call arrived on trunk {sl}"
    if s == EXTENSION and d in (OTHER, LOCAL, "") and dst.number:
        if numbers.is_external(dst.number, settings):
            return "o", f"channel: extension {sl}; number: destination {dst.number} is external"
        return "x", f"channel: extension {sl}; number: destination {dst.number} is internal"
    if s == EXTENSION and not dst.channel and not dst.number:
        return "x", f"channel: extension {sl}, no destination"
    # Fallback 1: numbers.
    src_ext = numbers.is_extension(numbers.clean(src.number), settings)
    src_out = numbers.is_external(src.number, settings)
    dst_ext = numbers.is_extension(numbers.clean(dst.number), settings)
    dst_out = numbers.is_external(dst.number, settings)
    if src_out and (dst_ext or d == EXTENSION):
        return "i", f"numbers: external {src.number} -> internal {dst.number or dl}"
    if src_ext and dst_out:
        return "o", f"numbers: internal {src.number} -> external {dst.number}"
    if src_ext and dst_ext:
        return "x", f"numbers: internal {src.number} -> internal {dst.number}"
    # Fallback 2: contexts.
    if _context_inbound(src.context):
        return "i", f"context: {src.context}"
    if _context_internal(src.context) and dst_out:
        return "o", f"context: {src.context} with external destination {dst.number}"
    if _context_internal(src.context):
        return "x", f"context: {src.context}"
    if src_out:
        return "i", f"numbers: external source {src.number}"
    if dst_out:
        return "o", f"numbers: external destination {dst.number}"
    return "x", "unknown: no trunk, external number or inbound context seen"
