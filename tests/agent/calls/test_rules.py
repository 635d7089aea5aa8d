"""Table tests of the small pure rules: numbers, channels/direction, tenants, ids."""

from __future__ import annotations

import pytest
from sipstack_agent.calls import group_linkedids, linkedid_sort_key, smallest_linkedid
from sipstack_agent.calls import numbers as nb
from sipstack_agent.calls.direction import Party, classify_channel, decide, parse_channel
from sipstack_agent.calls.tenants import detect_tenant, is_generic
from sipstack_agent.config import DirectionSettings, TenantSettings
from sipstack_agent.model import CdrRow, CelRow

from .helpers import T0

NANP = DirectionSettings(default_country_code="1", strip_dial_prefixes=("9", "*67", "*82"))
PLAIN = DirectionSettings(strip_dial_prefixes=("9", "*67"))
UK = DirectionSettings(default_country_code="44")


@pytest.mark.parametrize(
    ("raw", "settings", "expected"),
    [
        ("+1 (416) 555-0100", NANP, "+14165550100"),
        ("4165550100", NANP, "+14165550100"),
        ("14165550100", NANP, "+14165550100"),
        ("9055551234", NANP, "+19055551234"),  # 905 is an area code, not 9 + 055...
        ("9175551234", NANP, "+19175551234"),  # 917 too
        ("96135551234", NANP, "+16135551234"),  # 9 + a full number: stripped
        ("914165550100", NANP, "+14165550100"),
        ("*6741655501000", NANP, "41655501000"),  # feature code stripped; 11 digits not 1+NANP
        ("*674165550100", NANP, "+14165550100"),
        ("011442071234567", NANP, "+442071234567"),
        ("00442071234567", PLAIN, "+442071234567"),
        ("9011442071234567", PLAIN, "+442071234567"),  # 9 + international
        ("9055551234", PLAIN, "9055551234"),  # no country code: never guess, never strip
        ("4165550100", PLAIN, "4165550100"),
        ("02071234567", UK, "+442071234567"),
        ("101", NANP, "101"),
        ("*67101", NANP, "101"),
        ("", NANP, ""),
        ("anonymous", NANP, "anonymous"),
        ("1234567890", NANP, "1234567890"),  # area code cannot start with 1 / 0
    ],
)
def test_normalize(raw: str, settings: DirectionSettings, expected: str) -> None:
    assert nb.normalize(raw, settings) == expected


@pytest.mark.parametrize(
    ("number", "external"),
    [
        ("101", False),
        ("1234567", False),
        ("12345678", True),
        ("+44207", True),
        ("s", False),
        ("0114420712345", True),
        ("", False),
    ],
)
def test_is_external(number: str, external: bool) -> None:
    assert nb.is_external(number, DirectionSettings()) is external


@pytest.mark.parametrize(
    ("name", "settings", "kind"),
    [
        ("SIP/pstn-in-00000000", DirectionSettings(), "trunk"),
        ("SIP/101-00000001", DirectionSettings(), "extension"),
        ("PJSIP/2001-0000001a", DirectionSettings(), "extension"),
        ("PJSIP/12345678-0000001a", DirectionSettings(), "trunk"),  # longer than ext max
        ("PJSIP/12345678-0000001a", DirectionSettings(ext_max_length=8), "extension"),
        ("DAHDI/1-1", DirectionSettings(), "trunk"),
        ("IAX2/provider-1234", DirectionSettings(), "trunk"),
        ("IAX2/2001-77", DirectionSettings(), "extension"),
        ("Local/101@from-queue-00000001;1", DirectionSettings(), "local"),
        ("PJSIP/555-00000001", DirectionSettings(known_trunks=("555",)), "trunk"),
        ("PJSIP/carrier-00000001", DirectionSettings(known_trunks=("PJSIP/carrier",)), "trunk"),
        ("", DirectionSettings(), "other"),
        ("Message/ast_msg_queue", DirectionSettings(), "other"),
    ],
)
def test_classify_channel(name: str, settings: DirectionSettings, kind: str) -> None:
    assert classify_channel(name, settings) == kind


def test_parse_channel_local() -> None:
    p = parse_channel("Local/104@from-internal-00000002;2")
    assert (p.tech, p.peer, p.context) == ("Local", "104", "from-internal")


@pytest.mark.parametrize(
    ("src", "dst", "direction", "reason_start"),
    [
        (
            Party("SIP/t-00000001", "trunk", "4165550100"),
            Party("SIP/101-0001", "extension"),
            "i",
            "channels",
        ),
        (
            Party("SIP/101-00000001", "extension", "101"),
            Party("SIP/t-00000002", "trunk"),
            "o",
            "channels",
        ),
        (
            Party("SIP/101-00000001", "extension", "101"),
            Party("SIP/102-00000002", "extension"),
            "x",
            "channels",
        ),
        (Party("", "other", "4165550100"), Party("", "other", "101"), "i", "numbers"),
        (Party("", "other", "101"), Party("", "other", "+442071234567"), "o", "numbers"),
        (Party("", "other", "101"), Party("", "other", "102"), "x", "numbers"),
        (Party("", "other", "", "from-pstn"), Party("", "other", ""), "i", "context"),
        (Party("", "other", "", "from-did-direct"), Party("", "other", ""), "i", "context"),
        (
            Party("", "other", "anonymous", "from-internal"),
            Party("", "other", "4165550100"),
            "o",
            "context",
        ),
        (Party("", "other", ""), Party("", "other", ""), "x", "unknown"),
    ],
)
def test_direction(src: Party, dst: Party, direction: str, reason_start: str) -> None:
    got, reason = decide(src, dst, NANP)
    assert got == direction
    assert reason.startswith(reason_start)


def test_tenant_order_and_generic_contexts() -> None:
    s = TenantSettings(
        did_map=(("4155551000", "acme"),),
        accountcode_map=(("ac42", "globex"),),
        context_pattern=r"^(?:from-)?([a-z0-9]+)-(?:inbound|internal)$",
    )
    assert detect_tenant(TenantSettings(tenant="fixed"), dids=["4155551000"]) == ("fixed", "fixed")
    assert detect_tenant(s, dids=["+14155551000"], accountcodes=["ac42"]) == ("acme", "did")
    assert detect_tenant(s, dids=["999"], accountcodes=["ac42"]) == ("globex", "accountcode")
    assert detect_tenant(s, names=["initech-inbound"]) == ("initech", "pattern")
    # from-internal matches the pattern shape but is generic: never a tenant.
    generic = TenantSettings(context_pattern=r"^(.*)$")
    assert detect_tenant(generic, names=["from-internal", "internal", "default"]) == ("", "none")
    assert detect_tenant(TenantSettings(context_pattern="(")) == ("", "none")  # bad regex
    assert is_generic("from-internal") and is_generic("macro-dial-one") and not is_generic("acme")


def test_linkedid_numeric_order() -> None:
    assert smallest_linkedid(["1700000009.10", "1700000009.9"]) == "1700000009.9"
    assert smallest_linkedid(["1700000010.0", "999999999.5"]) == "999999999.5"
    assert linkedid_sort_key("abc") > linkedid_sort_key("1.1")
    assert smallest_linkedid([]) == ""


def test_group_linkedids_transitive_merge() -> None:
    def cel(uid: str, lid: str) -> CelRow:
        return CelRow(eventtype="CHAN_START", eventtime=T0, uniqueid=uid, linkedid=lid)

    rows: list[CelRow | CdrRow] = [
        cel("1.1", "1.1"),
        cel("1.2", "1.1"),
        cel("1.2", "1.3"),  # 1.2 moved to linkedid 1.3
        cel("1.4", "1.3"),
        cel("1.4", "1.5"),  # and 1.4 to 1.5: 1.1 ~ 1.3 ~ 1.5
        cel("2.1", "2.1"),
        cel("3.1", ""),  # empty linkedid -> its uniqueid
        CdrRow(calldate=T0, uniqueid="2.2", linkedid="2.1"),
        cel("", ""),  # nothing to group by: ignored
    ]
    assert group_linkedids(rows) == [
        frozenset({"1.1", "1.3", "1.5"}),
        frozenset({"2.1"}),
        frozenset({"3.1"}),
    ]
