"""`kubectl sipstack ...` (console script kubectl-sipstack; kubectl finds it on PATH).

    kubectl sipstack status [-n NS | -A] [-o json|wide]
    kubectl sipstack resend NAME --since T [--until T] [--linkedid X ...]
    kubectl sipstack dead-letters NAME [list [--reason R] | retry [ID ...] [--reason R] [--all]]

`status` (whatever -o) exits 0 when every connector is Ready, 1 when one is not, 2 when the
cluster cannot be reached (or refused the list). `resend` and `dead-letters`
write the request annotation (controlreq.py) and wait for the operator's answer
in status.lastRequest: 0 Succeeded, 1 Failed or Invalid (or no such connector),
2 the cluster cannot be reached (or a usage error), 3 no answer within
--timeout (is the operator running?). `--no-wait` only writes the request.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from sipstack_operator import controlreq as cr
from sipstack_operator.kubectl import table
from sipstack_operator.kubectl.cluster import ClusterError, Connectors, Login, NotFoundError, login

EXIT_OK, EXIT_NOT_READY, EXIT_CLUSTER, EXIT_NO_ANSWER = 0, 1, 2, 3
POLL = 0.5


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--kubeconfig", help="kubeconfig file (default: KUBECONFIG, ~/.kube/config)"
    )
    common.add_argument("--context", help="kubeconfig context (default: the current one)")
    common.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    return common


def _waiting() -> argparse.ArgumentParser:
    waiting = argparse.ArgumentParser(add_help=False)
    group = waiting.add_mutually_exclusive_group()
    group.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for the operator (60)"
    )
    group.add_argument("--no-wait", action="store_true", help="write the request and exit")
    return waiting


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl sipstack", description="SIPSTACK Asterisk connectors from kubectl."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    common, waiting = _common(), _waiting()

    p = sub.add_parser("status", parents=[common], help="the fleet as a table")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    p.add_argument(
        "-o",
        "--output",
        choices=["json", "wide"],
        help="json: the rows as a list of objects (for scripts); wide: IMAGE and MESSAGE too",
    )
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "resend", parents=[common, waiting], help="ship a window of calls again (new revisions)"
    )
    p.add_argument("name", help="the AsteriskConnector")
    p.add_argument("--since", required=True, help="ISO-8601 time with an offset")
    p.add_argument("--until", help="ISO-8601 time with an offset (default: now)")
    p.add_argument("--linkedid", action="append", default=[], help="only this call (repeatable)")
    p.set_defaults(func=cmd_resend)

    p = sub.add_parser(
        "dead-letters", parents=[common, waiting], help="list or retry refused documents"
    )
    p.add_argument("name", help="the AsteriskConnector")
    p.add_argument("verb", nargs="?", choices=["list", "retry"], default="list")
    p.add_argument("ids", nargs="*", type=int, metavar="ID", help="retry: these dead letters")
    p.add_argument("--reason", help="only this reason, e.g. http_400")
    p.add_argument("--all", action="store_true", help="retry: every dead letter")
    p.set_defaults(func=cmd_dead_letters)
    return parser


# --------------------------------------------------------------------------- status


def cmd_status(args: argparse.Namespace, out: TextIO, session: Login, api: Connectors) -> int:
    if args.all_namespaces and args.namespace:
        print("error: -A and -n exclude each other", file=sys.stderr)
        return EXIT_CLUSTER
    namespace = None if args.all_namespaces else (args.namespace or session.namespace)
    crs = api.list(namespace)
    rows = table.rows(crs)
    if args.output == "json":
        out.write(table.render_json(rows))
    elif not rows:
        where = "any namespace" if namespace is None else f"namespace {namespace}"
        out.write(f"No AsteriskConnectors found in {where}.\n")
    else:
        out.write(table.render(rows, namespaced=namespace is not None, wide=args.output == "wide"))
    return EXIT_OK if all(r.ready for r in rows) else EXIT_NOT_READY


# --------------------------------------------------------------------------- requests


def new_request(action: str, args: dict[str, Any], now: datetime | None = None) -> cr.Request:
    now = now or datetime.now(tz=UTC)
    rid = f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"
    request = cr.Request(rid, action, args, now.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return cr.parse(request.annotation())  # the operator's own checks, before writing


def cmd_resend(args: argparse.Namespace, out: TextIO, session: Login, api: Connectors) -> int:
    body: dict[str, Any] = {"since": args.since}
    if args.until:
        body["until"] = args.until
    if args.linkedid:
        body["linkedids"] = list(args.linkedid)
    return _ask(args, out, session, api, cr.RESEND, body)


def cmd_dead_letters(args: argparse.Namespace, out: TextIO, session: Login, api: Connectors) -> int:
    body: dict[str, Any] = {}
    if args.reason:
        body["reason"] = args.reason
    if args.verb == "list":
        if args.ids or args.all:
            print("error: list takes no IDs and no --all", file=sys.stderr)
            return EXIT_CLUSTER
        return _ask(args, out, session, api, cr.LIST, body)
    if args.ids:
        body["ids"] = list(args.ids)
    if args.all:
        body["all"] = True
    return _ask(args, out, session, api, cr.RETRY, body)


def _ask(
    args: argparse.Namespace,
    out: TextIO,
    session: Login,
    api: Connectors,
    action: str,
    body: dict[str, Any],
) -> int:
    namespace = args.namespace or session.namespace
    try:
        request = new_request(action, body)
    except cr.RequestError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CLUSTER
    try:
        api.get(namespace, args.name)
    except NotFoundError:
        print(f"error: no AsteriskConnector {args.name} in namespace {namespace}", file=sys.stderr)
        return EXIT_NOT_READY
    api.annotate(namespace, args.name, cr.REQUEST_ANNOTATION, request.annotation())
    out.write(f"request {request.id} ({action}) written to {namespace}/{args.name}\n")
    if args.no_wait:
        return EXIT_OK
    answer = wait_for(api, namespace, args.name, request.id, timeout=args.timeout)
    if answer is None:
        out.write(
            f"no answer from the operator within {args.timeout:g} s: is it running? The "
            f"request stays; see `kubectl describe asteriskconnector {args.name}`\n"
        )
        return EXIT_NO_ANSWER
    out.write(f"{answer.get('outcome')}: {answer.get('message', '')}\n")
    for item in answer.get("items") or []:
        out.write(f"  {item}\n")
    return EXIT_OK if answer.get("outcome") == cr.SUCCEEDED else EXIT_NOT_READY


def wait_for(
    api: Connectors,
    namespace: str,
    name: str,
    request_id: str,
    *,
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any] | None:
    """status.lastRequest once the operator finished this request (None: timed out)."""
    deadline = time.monotonic() + timeout
    while True:
        last = (api.get(namespace, name).get("status") or {}).get("lastRequest") or {}
        if last.get("id") == request_id and last.get("outcome") != cr.RUNNING:
            return dict(last)
        if time.monotonic() >= deadline:
            return None
        sleep(POLL)


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = out or sys.stdout
    try:
        session = login(args.kubeconfig, args.context)
        api = Connectors(session.configuration)
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CLUSTER
    try:
        code: int = args.func(args, out, session, api)
        return code
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CLUSTER
    finally:
        api.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
