"""Call keys: the numeric order of Asterisk ids and linkedid grouping."""

from __future__ import annotations

from collections.abc import Iterable


def linkedid_sort_key(value: str) -> tuple[int, int, int, str]:
    """Numeric order for Asterisk ids ("1795495160.10" > "1795495160.9"); others after.

    Only ASCII digits count as numeric: "²" or Arabic-Indic digits are
    `str.isdigit()` but not Asterisk ids, so they sort after, never raise.
    """
    head, dot, tail = value.partition(".")
    if _ascii_digits(head) and (not dot or _ascii_digits(tail)):
        return (0, int(head), int(tail) if tail else 0, value)
    return (1, 0, 0, value)


def _ascii_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def smallest_linkedid(linkedids: Iterable[str]) -> str:
    """The key of a merged call."""
    return min(linkedids, key=linkedid_sort_key, default="")


def group_pairs(pairs: Iterable[tuple[str, str]]) -> list[frozenset[str]]:
    """Linkedid groups from (linkedid, uniqueid) pairs, merged when they share a uniqueid.

    Transitive; an empty uniqueid links nothing. Groups are returned ordered
    by their smallest linkedid.
    """
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for lid, uid in pairs:
        lnode = "L" + lid
        parent.setdefault(lnode, lnode)
        if uid:
            unode = "U" + uid
            parent.setdefault(unode, unode)
            ra, rb = find(lnode), find(unode)
            if ra != rb:
                parent[rb] = ra
    groups: dict[str, set[str]] = {}
    for node in parent:
        if node.startswith("L"):
            groups.setdefault(find(node), set()).add(node[1:])
    return sorted(
        (frozenset(g) for g in groups.values()),
        key=lambda g: linkedid_sort_key(smallest_linkedid(g)),
    )
