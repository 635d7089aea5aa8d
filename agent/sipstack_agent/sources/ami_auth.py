"""How the agent logs in to the AMI (AMI_AUTH), without sending the secret in clear text.

`auto` (the default) asks `Action: Challenge` / `AuthType: MD5` first; when the
server answers with a challenge the login carries `AuthType: MD5` and
`Key: md5(challenge + secret)` (Asterisk's manager.c), never the secret. A
server that offers no challenge gets the classic `Secret:` login, with a
WARNING unless the connection is TLS (AMI_TLS). `md5` refuses such a server;
`plain` skips the challenge.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from ..config import AmiSettings

__all__ = ["CHALLENGE", "login_action", "md5_key", "plaintext_warning"]


def md5_key(challenge: str, secret: str) -> str:
    """Asterisk's MD5 login key: hex md5 of the challenge followed by the secret."""
    return hashlib.md5((challenge + secret).encode("utf-8"), usedforsecurity=False).hexdigest()


CHALLENGE: dict[str, str] = {"Action": "Challenge", "AuthType": "MD5"}


def login_action(
    s: AmiSettings, challenge: str | None, wire: Callable[[str], str]
) -> dict[str, str]:
    """The Login action: MD5 key when a challenge came back, else the secret itself.

    `wire` turns text into what is written on the connection (its encoding)."""
    action = {"Action": "Login", "Username": wire(s.username), "Events": s.events or "call"}
    if challenge:
        action |= {"AuthType": "MD5", "Key": md5_key(challenge, s.password)}
    else:
        action["Secret"] = wire(s.password)
    return action


def plaintext_warning(s: AmiSettings, challenge: str | None) -> str:
    """The WARNING for a login whose secret crosses the network readable ("" when none)."""
    if challenge or s.tls:
        return ""
    return (
        f"AMI {s.host}: the secret of {s.username!r} was sent in clear text (no MD5 "
        "challenge login); set AMI_TLS=true (manager.conf [general] tlsenable=yes), or "
        "AMI_AUTH=md5 to refuse a server without the challenge"
    )
