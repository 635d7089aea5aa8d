"""The channels of a simulated call and the recorder of its CEL rows."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol


@dataclass
class Chan:
    """One Asterisk channel of a simulated call (what its CEL rows repeat)."""

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


def json_text(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


class _Source(Protocol):
    rng: random.Random
    oddities: bool


class Recorder:
    """The CEL rows of one call as they are emitted, and the call's clock."""

    def __init__(self, gen: _Source, t: datetime) -> None:
        self.gen = gen
        self.t = t
        self.rows: list[dict[str, Any]] = []

    def tick(self, seconds: float = 0.0) -> datetime:
        self.t = self.t + timedelta(seconds=seconds or self.gen.rng.uniform(0.00005, 0.0006))
        return self.t

    def ev(
        self,
        eventtype: str,
        ch: Chan,
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
        return json_text({"bridge_id": bridge, "bridge_technology": "simple_bridge"})
