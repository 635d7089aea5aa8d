"""What a connector may ask of the operator: the install's allow-list.

Whoever may create an AsteriskConnector borrows the operator's rights, so the
operator's install (its environment, set from the chart's `operator.allow`
values) decides, once at startup, what a connector may point at:

- `SIPSTACK_ALLOWED_API_HOSTS`: hosts `spec.apiUrl` (or the region's host) may
  name; default: SIPSTACK's regional API hosts (spec.REGION_HOSTS);
- `SIPSTACK_ALLOWED_IMAGE_REPOSITORIES`: repositories `spec.image` may come
  from (an entry ending in `/` allows everything under it); default: the
  repository of the default agent image;
- `SIPSTACK_ALLOWED_VOLUME_TYPES`: volume sources `spec.cel.csvVolume` and
  `spec.recordings.volume` may use; default: persistentVolumeClaim,
  configMap, emptyDir, csi, ephemeral (no hostPath, no nfs);
- `SIPSTACK_SECRET_LABEL`: `key=value` every referenced Secret must carry;
  default `sipstack.com/connector-secret=true`;
- `SIPSTACK_ALLOW_INSECURE_HTTP`: `true` lets a connector set
  `spec.apiAllowInsecureHttp` (plaintext http:// to a non-loopback API host:
  the API key and every call in cleartext); default `false`, such a connector
  is refused.

Each list is comma-separated; `*` allows anything. `spec.database.host` is not
restricted (PBXs live anywhere): see docs/security.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sipstack_operator.spec import REGION_HOSTS, ConnectorSpec

ANY = "*"
SECRET_LABEL = ("sipstack.com/connector-secret", "true")
DEFAULT_VOLUME_TYPES = ("persistentVolumeClaim", "configMap", "emptyDir", "csi", "ephemeral")
_HOST_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?$")
_LABEL_KEY_RE = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)


class AllowListError(ValueError):
    """A bad allow-list variable; the message names it."""


def image_repository(image: str) -> str:
    """`registry/path/name` of an image reference, without tag or digest."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


@dataclass(frozen=True)
class AllowList:
    api_hosts: frozenset[str]
    image_repositories: tuple[str, ...]
    volume_types: frozenset[str]
    secret_label: tuple[str, str] | None  # None: any Secret of the namespace
    insecure_http: bool = False  # a connector may set spec.apiAllowInsecureHttp

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, default_image: str) -> AllowList:
        hosts = _list(env, "SIPSTACK_ALLOWED_API_HOSTS") or list(REGION_HOSTS.values())
        for host in hosts:
            if host != ANY and not _HOST_RE.match(host.lower()):
                raise AllowListError(
                    f"SIPSTACK_ALLOWED_API_HOSTS: {host!r} is not a host name (no scheme, no path)"
                )
        repos = _list(env, "SIPSTACK_ALLOWED_IMAGE_REPOSITORIES") or [
            image_repository(default_image)
        ]
        for repo in repos:
            if repo != ANY and (":" in repo.rsplit("/", 1)[-1] or "@" in repo):
                raise AllowListError(
                    f"SIPSTACK_ALLOWED_IMAGE_REPOSITORIES: {repo!r} is a repository, "
                    "without tag or digest"
                )
        volumes = _list(env, "SIPSTACK_ALLOWED_VOLUME_TYPES") or list(DEFAULT_VOLUME_TYPES)
        for volume in volumes:
            if volume != ANY and not volume.isalnum():
                raise AllowListError(
                    f"SIPSTACK_ALLOWED_VOLUME_TYPES: {volume!r} is not a volume source "
                    "(persistentVolumeClaim, nfs, hostPath, ...)"
                )
        return cls(
            api_hosts=frozenset(h.lower() for h in hosts),
            image_repositories=tuple(repos),
            volume_types=frozenset(volumes),
            secret_label=_label(env, "SIPSTACK_SECRET_LABEL"),
            insecure_http=_flag(env, "SIPSTACK_ALLOW_INSECURE_HTTP"),
        )

    def check_spec(self, spec: ConnectorSpec) -> list[str]:
        """The rules `spec` breaks, each saying which (empty: allowed)."""
        problems: list[str] = []
        host, port = _api_host(spec)
        candidates = {host, f"{host}:{port}"} if port else {host}
        if ANY not in self.api_hosts and not candidates & self.api_hosts:
            problems.append(
                f"API host {host!r} is not allowed (SIPSTACK_ALLOWED_API_HOSTS: "
                f"{', '.join(sorted(self.api_hosts))})"
            )
        if spec.api_allow_insecure_http and not self.insecure_http:
            problems.append(
                "spec.apiAllowInsecureHttp: plaintext http:// to the API is not allowed by "
                "this install (SIPSTACK_ALLOW_INSECURE_HTTP: false); use https://"
            )
        if spec.image and not self._image_allowed(spec.image):
            problems.append(
                f"image {spec.image!r} is not from an allowed repository "
                f"(SIPSTACK_ALLOWED_IMAGE_REPOSITORIES: {', '.join(self.image_repositories)})"
            )
        volumes: list[tuple[str, Mapping[str, Any] | None]] = []
        if spec.cel.mode == "csv":
            volumes.append(("spec.cel.csvVolume", spec.cel.csv_volume))
        if spec.recordings.enabled:
            volumes.append(("spec.recordings.volume", spec.recordings.volume))
        for path, source in volumes:
            for kind in source or {}:
                if ANY not in self.volume_types and kind not in self.volume_types:
                    problems.append(
                        f"{path}: volume type {kind!r} is not allowed "
                        f"(SIPSTACK_ALLOWED_VOLUME_TYPES: {', '.join(sorted(self.volume_types))})"
                    )
        return problems

    def check_secret(self, obj: Mapping[str, Any]) -> str | None:
        """Why a referenced Secret may not be used (None: it may)."""
        if self.secret_label is None:
            return None
        key, value = self.secret_label
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        if labels.get(key) == value:
            return None
        return (
            f"Secret {meta.get('name')!r} does not carry the label {key}={value} "
            "(SIPSTACK_SECRET_LABEL): only Secrets labelled for connectors are read"
        )

    def _image_allowed(self, image: str) -> bool:
        repo = image_repository(image)
        for allowed in self.image_repositories:
            if allowed == ANY or repo == allowed:
                return True
            if allowed.endswith("/") and repo.startswith(allowed):
                return True
        return False


def _api_host(spec: ConnectorSpec) -> tuple[str, int | None]:
    """The API host the agent will talk to, and the URL's explicit port."""
    if spec.api_url:
        parts = urlsplit(spec.api_url)
        return (parts.hostname or "").lower(), parts.port
    return REGION_HOSTS[spec.region], None


def _list(env: Mapping[str, str], name: str) -> list[str]:
    return [item.strip() for item in (env.get(name) or "").split(",") if item.strip()]


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "").strip()
    if raw.lower() not in ("", "true", "false"):
        raise AllowListError(f"{name} must be true or false, got {raw!r}")
    return raw.lower() == "true"


def _label(env: Mapping[str, str], name: str) -> tuple[str, str] | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return SECRET_LABEL
    if raw == ANY:
        return None
    key, sep, value = raw.partition("=")
    if not sep or not _LABEL_KEY_RE.match(key.strip()) or not value.strip():
        raise AllowListError(f"{name} must be key=value (or * for any Secret), got {raw!r}")
    return key.strip(), value.strip()
