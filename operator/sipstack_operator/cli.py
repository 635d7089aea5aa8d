"""`sipstack-operator run` (kopf) and `sipstack-operator render` (no cluster).

    sipstack-operator run [--namespace NS ...] [--all-namespaces] [--liveness URL] [--verbose]
                          [--standalone]
        Namespaces also from SIPSTACK_NAMESPACES (comma-separated) or
        SIPSTACK_ALL_NAMESPACES=true when no flag is given. Replicas peer
        through kopf's peering object (SIPSTACK_PEERING, created at start):
        one handles the connectors, the others stand by. --standalone (or
        SIPSTACK_STANDALONE=true): no peering, run one replica only.
        Prometheus metrics on SIPSTACK_METRICS_PORT (default 9090, 0 = off)
        at /metrics.

    sipstack-operator render -f cr.yaml [--secrets secrets.yaml] [--image IMAGE]
                             [--no-service-monitor-crd]
        Prints the children of every AsteriskConnector in cr.yaml as YAML.
        No secret value is ever printed: the agent reads the referenced Secrets
        as mounted files. Without --secrets (the normal case) the config-hash
        annotation is computed over placeholders and differs from the one the
        operator writes; with --secrets (the Secrets' data or stringData) it is
        the operator's, and a key not found there is named on stderr.

Exit codes: 0 ok, 1 runtime error, 2 usage or invalid input.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from sipstack_operator import __version__
from sipstack_operator.render import (
    CONTROL_TOKEN_PLACEHOLDER,
    DEFAULT_AGENT_IMAGE,
    Owner,
    render,
)
from sipstack_operator.spec import API_VERSION, KIND, SpecError, parse_resource


def _load_docs(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if isinstance(d, dict)]


def secret_values(docs: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], str]:
    """(namespace, name, key) -> text, from Secret documents (data or stringData)."""
    values: dict[tuple[str, str, str], str] = {}
    for doc in docs:
        if doc.get("kind") != "Secret":
            continue
        meta = doc.get("metadata") or {}
        ns, name = str(meta.get("namespace") or "default"), str(meta.get("name"))
        for key, value in (doc.get("data") or {}).items():
            try:
                values[(ns, name, str(key))] = base64.b64decode(str(value)).decode()
            except (binascii.Error, UnicodeDecodeError):
                continue
        for key, value in (doc.get("stringData") or {}).items():
            values[(ns, name, str(key))] = str(value)
    return values


def render_documents(
    crs: Iterable[Mapping[str, Any]],
    secret_docs: Iterable[Mapping[str, Any]] = (),
    *,
    default_image: str = DEFAULT_AGENT_IMAGE,
    service_monitor_available: bool = True,
    warn: Any = None,
    control_token: str = CONTROL_TOKEN_PLACEHOLDER,
) -> list[dict[str, Any]]:
    """The children of every AsteriskConnector in `crs`.

    Secret values only feed the config hash (placeholders for the keys not
    given); `warn` hears of a missing key only when some Secrets were given. The
    control token is the operator's to generate: a placeholder the agent refuses."""
    secret_docs = list(secret_docs)
    values = secret_values(secret_docs)
    out: list[dict[str, Any]] = []
    for cr in crs:
        if cr.get("kind") != KIND or cr.get("apiVersion") != API_VERSION:
            continue
        spec = parse_resource(cr, default_image=default_image)
        data: dict[tuple[str, str], str] = {}
        for ref in spec.secret_refs():
            value = values.get((spec.namespace, ref.name, ref.key))
            if value is None:
                value = f"<{ref.name}/{ref.key}>"
                if warn is not None and secret_docs:
                    warn(
                        f"{spec.namespace}/{spec.name}: {ref.describe()} not given; "
                        "the config hash differs from the operator's"
                    )
            data[(ref.name, ref.key)] = value
        uid = (cr.get("metadata") or {}).get("uid")
        out.extend(
            render(
                spec,
                data,
                owner=Owner(name=spec.name, uid=str(uid)) if uid else None,
                service_monitor_available=service_monitor_available,
                default_image=default_image,
                control_token=control_token,
            )
        )
    return out


def dump(docs: Sequence[Mapping[str, Any]]) -> str:
    return yaml.safe_dump_all([dict(d) for d in docs], sort_keys=False, default_flow_style=False)


def _cmd_render(args: argparse.Namespace) -> int:
    try:
        crs = _load_docs(args.file)
        secret_docs = _load_docs(args.secrets) if args.secrets else []
        children = render_documents(
            crs,
            secret_docs,
            default_image=args.image,
            service_monitor_available=not args.no_service_monitor_crd,
            warn=lambda msg: print(f"warning: {msg}", file=sys.stderr),
        )
    except (OSError, yaml.YAMLError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except SpecError as e:
        print(f"error: invalid AsteriskConnector: {e}", file=sys.stderr)
        return 2
    if not children:
        print(f"error: no {API_VERSION} {KIND} in {args.file}", file=sys.stderr)
        return 2
    sys.stdout.write(dump(children))
    return 0


def _namespaces(args: argparse.Namespace) -> tuple[bool, list[str]]:
    namespaces = [n for n in args.namespace or [] if n]
    if args.all_namespaces and namespaces:
        raise SystemExit("error: --all-namespaces and --namespace exclude each other")
    if args.all_namespaces:
        return True, []
    if not namespaces:
        env = os.environ.get("SIPSTACK_NAMESPACES", "")
        namespaces = [n.strip() for n in env.split(",") if n.strip()]
    if not namespaces:
        if os.environ.get("SIPSTACK_ALL_NAMESPACES", "").lower() in ("1", "true", "yes"):
            return True, []
        raise SystemExit("error: give --namespace NS (repeatable) or --all-namespaces")
    return False, namespaces


def _cmd_run(args: argparse.Namespace) -> int:
    import kopf

    from sipstack_operator.kopfsettings import SettingsError

    clusterwide, namespaces = _namespaces(args)
    from sipstack_operator.config import OperatorConfig

    try:
        OperatorConfig.from_env()
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.json_logs else kopf.LogFormat.FULL,
    )
    try:
        from sipstack_operator import handlers  # registers the handlers
    except SettingsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    # kopf's peering identity (kopf reads POD_ID): the pod, as in the events.
    os.environ.setdefault("POD_ID", handlers.PROCESS.pod_name)
    kopf.run(
        standalone=True if args.standalone else None,
        clusterwide=clusterwide,
        namespaces=namespaces,
        memo=kopf.Memo(served_namespaces=namespaces),
        liveness_endpoint=args.liveness or os.environ.get("SIPSTACK_LIVENESS") or None,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sipstack-operator", description="Kubernetes operator for AsteriskConnector resources."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator (kopf)")
    run.add_argument("-n", "--namespace", action="append", help="namespace to serve (repeatable)")
    run.add_argument("-A", "--all-namespaces", action="store_true", help="serve every namespace")
    run.add_argument(
        "--liveness",
        metavar="URL",
        help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz",
    )
    run.add_argument(
        "--standalone", action="store_true", help="no peering (run exactly one replica)"
    )
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    run.add_argument("--json-logs", action="store_true", help="log as JSON lines")
    run.set_defaults(func=_cmd_run)

    rnd = sub.add_parser("render", help="print the children of AsteriskConnector(s) as YAML")
    rnd.add_argument("-f", "--file", required=True, help="YAML with AsteriskConnector(s)")
    rnd.add_argument(
        "--secrets",
        help="YAML with the referenced Secrets (only for the operator's config hash; "
        "no value is printed)",
    )
    rnd.add_argument("--image", default=DEFAULT_AGENT_IMAGE, help="default agent image")
    rnd.add_argument(
        "--no-service-monitor-crd",
        action="store_true",
        help="render as for a cluster without the ServiceMonitor CRD",
    )
    rnd.set_defaults(func=_cmd_render)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
