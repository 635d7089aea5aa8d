"""A kmock 0.8 KubernetesEmulator with the API-server behaviour the operator relies on.

kmock stores bodies verbatim and merges every PATCH like a merge patch. This
subclass adds, for the tests only (the operator code is written for a real
API server):

- server-filled metadata: uid, resourceVersion (bumped on every write),
  creationTimestamp, generation (bumped when anything but metadata/status
  changes), namespace from the URL, name from generateName;
- server-side apply (PATCH with application/apply-patch+yaml): requires
  fieldManager; creates a missing object; on an existing one it removes the
  fields this manager applied last time but no longer applies, then merges
  the new configuration (lists replaced whole: right for a single manager,
  which is all the operator is). Objects that did not change are not
  re-written (no watch event, same resourceVersion), like the real server;
- status subresource isolation for resources that declare it: a PATCH of
  /status changes only .status, a PATCH of the main resource ignores .status;
- garbage collection: when an object is really deleted, objects whose
  ownerReferences name its uid are deleted too (transitively), and an object
  created with owners that are all gone is deleted right after creation;
- lists carry `kind: <Kind>List`, `apiVersion` and a numeric resourceVersion;
  lists and watches honour `fieldSelector=metadata.name=<name>`; a watch is
  served as application/json and, with sendInitialEvents=true, ends its
  initial events with the BOOKMARK a streaming list has (what kubectl's
  `delete --wait` needs);
- kmock answers 500 for malformed bodies; an apply without fieldManager is 422,
  and so is a JSON patch whose `test` op fails (kopf's finalizer removal
  tests resourceVersion and, on 422, tries again with the next event);
- injected faults: `fail_apply(plural, name, code, message)` makes every
  server-side apply of that object answer an API Status error (as an
  admission webhook, a quota or an immutable field would), until
  `heal_apply(plural, name)`; the object is left unchanged.
"""

from __future__ import annotations

import copy
import datetime
import itertools
import json
import uuid
from typing import Any

import aiohttp.web
import kmock
import yaml
from kmock._internal import enums, rendering

APPLY = "application/apply-patch+yaml"
JSON_PATCH = "application/json-patch+json"


def ssa_merge(live: Any, last_applied: Any, applied: Any) -> Any:
    """Merge `applied` into `live`, dropping fields only `last_applied` had."""
    if not isinstance(applied, dict) or not isinstance(live, dict):
        return copy.deepcopy(applied)
    result = copy.deepcopy(live)
    last = last_applied if isinstance(last_applied, dict) else {}
    for key in last:
        if key not in applied:
            result.pop(key, None)
    for key, value in applied.items():
        result[key] = ssa_merge(result.get(key), last.get(key), value)
    return result


def _essence(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class Emulator(kmock.KubernetesEmulator):
    # kmock checks every request against its reactions by scanning the whole
    # request log (quadratic over a long run). The bench keeps only the tail.
    request_log_limit: int | None = None

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._rv = itertools.count(1000)
        self._applied: dict[tuple[Any, ...], Any] = {}
        self._apply_faults: dict[tuple[str, str], tuple[int, str]] = {}
        self.apply_fault_hits: dict[tuple[str, str], int] = {}

    def fail_apply(self, plural: str, name: str, code: int, message: str) -> None:
        self._apply_faults[(plural, name)] = (code, message)
        self.apply_fault_hits[(plural, name)] = 0

    def heal_apply(self, plural: str, name: str) -> None:
        self._apply_faults.pop((plural, name), None)

    # ------------------------------------------------------------------ helpers

    def _now(self) -> str:
        return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _fill_new(self, request: Any, obj: dict[str, Any]) -> None:
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if request.namespace and not meta.get("namespace"):
            meta["namespace"] = request.namespace
        meta["uid"] = str(uuid.uuid4())
        meta["resourceVersion"] = str(next(self._rv))
        meta["creationTimestamp"] = self._now()
        meta["generation"] = 1
        meta.pop("deletionTimestamp", None)

    def _lookup(self, key: Any) -> Any:
        # kmock's ObjectsArray has `in` and `[]` but no .get().
        if key not in self._objects:
            return None
        return self._objects[key]

    def _has_status_subresource(self, resource: Any) -> bool:
        try:
            info = self.resources[resource]
        except KeyError:
            return False
        return "status" in info.subresources

    def _name_selected(self, request: Any, obj: Any) -> bool:
        """`fieldSelector=metadata.name=<name>` (the only field selector emulated)."""
        selector = (request.params or {}).get("fieldSelector", "")
        wanted = [s.split("=", 1)[1] for s in selector.split(",") if s.startswith("metadata.name=")]
        name = (obj.get("metadata") or {}).get("name") if isinstance(obj, dict) else None
        return not wanted or name == wanted[0].lstrip("=")

    async def _serve_list(self, request: Any) -> Any:
        payload = await super()._serve_list(request)
        info = self.resources[request.resource]
        group, version = request.resource.group, request.resource.version
        payload["kind"] = f"{info.kind}List"
        payload["apiVersion"] = f"{group}/{version}" if group else version
        payload["metadata"] = {"resourceVersion": str(next(self._rv))}
        payload["items"] = [o for o in payload["items"] if self._name_selected(request, o)]
        return payload

    def _serve_watch(self, request: Any) -> Any:
        """The watch stream as application/json (client-go refuses kmock's octet-stream)."""
        return rendering.Response(
            headers={"Content-Type": "application/json"}, payload=self._watch_events(request)
        )

    async def _watch_events(self, request: Any) -> Any:
        """kmock's watch (existing objects as ADDED, then the bus), plus the streaming-list
        BOOKMARK that ends the initial events when the client asks for them
        (sendInitialEvents=true: client-go's WatchList, kubectl 1.32+)."""
        check = self._KubernetesEmulator__check  # type: ignore[attr-defined]
        yield b""
        bus = self._buses[request.resource]
        async with self._lock:  # writers put events under this lock: no event is lost
            mark = await bus.mark()
            objs = self._KubernetesEmulator__get_objs(request, strict=False)  # type: ignore[attr-defined]
            initial = [o.raw for o in objs if not o.deleted]
        try:
            for raw in initial:
                if self._name_selected(request, raw):
                    yield {"type": "ADDED", "object": raw}
            if (request.params or {}).get("sendInitialEvents") == "true":
                info = self.resources[request.resource]
                group, version = request.resource.group, request.resource.version
                yield {
                    "type": "BOOKMARK",
                    "object": {
                        "kind": info.kind,
                        "apiVersion": f"{group}/{version}" if group else version,
                        "metadata": {
                            "resourceVersion": str(next(self._rv)),
                            "annotations": {"k8s.io/initial-events-end": "true"},
                        },
                    },
                }
            async for event in mark:
                meta = (event.get("object") or {}).get("metadata") or {}
                namespace, name = meta.get("namespace"), meta.get("name")
                selected = check(request, request.resource, namespace, name, strict=False)
                if selected and self._name_selected(request, event.get("object")):
                    yield event
        finally:
            await bus.unmark(mark)

    # ------------------------------------------------------------------ dispatch

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        limit = self.request_log_limit
        if limit is not None and len(self._requests) > 2 * limit:
            del self._requests[:-limit]
        if request.resource is None:
            return await super()._handle(request)

        if request.action == enums.action.UPDATE and request.name is not None:
            if APPLY in (request.headers.get("Content-Type") or ""):
                return await self._apply(request)
            failed_test = self._failed_json_patch_test(request)
            if failed_test is not None:
                return _status(422, "Invalid", failed_test)
            self._prepare_patch(request)
        elif request.action == enums.action.CREATE and isinstance(request.data, dict):
            self._fill_new(request, request.data)

        key = (request.resource, request.namespace, request.name)
        uid = None
        if request.action in (enums.action.DELETE, enums.action.UPDATE) and request.name:
            existing = self._lookup(key)
            if existing is not None and not existing.deleted:
                uid = existing.get("metadata", {}).get("uid")
        response = await super()._handle(request)
        if uid is not None and (key not in self._objects or self._objects[key].deleted):
            await self._collect_garbage(uid)
        return response

    def _failed_json_patch_test(self, request: Any) -> str | None:
        """A JSON patch whose `test` op does not hold is 422 (kmock: 500), as kopf expects."""
        if JSON_PATCH not in (request.headers.get("Content-Type") or ""):
            return None
        existing = self._lookup((request.resource, request.namespace, request.name))
        if existing is None or existing.deleted or not isinstance(request.data, list):
            return None
        for op in request.data:
            if not isinstance(op, dict) or op.get("op") != "test":
                continue
            value: Any = existing.raw
            for part in str(op.get("path", "")).strip("/").split("/"):
                value = value.get(part) if isinstance(value, dict) else None
            if value != op.get("value"):
                return f"the test of {op.get('path')} failed: is {value!r}, not {op.get('value')!r}"
        return None

    def _prepare_patch(self, request: Any) -> None:
        """Status isolation, resourceVersion and generation for a merge patch."""
        patch = request.data
        if not isinstance(patch, dict):
            return
        key = (request.resource, request.namespace, request.name)
        if key not in self._objects or self._objects[key].deleted:
            return
        if self._has_status_subresource(request.resource):
            if request.subresource == "status":
                for k in list(patch):
                    if k != "status":
                        del patch[k]
            else:
                patch.pop("status", None)
        live = self._objects[key].raw
        meta = patch.setdefault("metadata", {})
        meta["resourceVersion"] = str(next(self._rv))
        for server_field in ("uid", "creationTimestamp", "generation"):
            meta.pop(server_field, None)
        merged = kmock_merge(live, patch)
        if _essence(merged) != _essence(live):
            meta["generation"] = int(live.get("metadata", {}).get("generation") or 1) + 1

    async def _apply(self, request: Any) -> aiohttp.web.StreamResponse:
        fault = self._apply_faults.get((request.resource.plural, request.name))
        if fault is not None:
            code, message = fault
            self.apply_fault_hits[(request.resource.plural, request.name)] += 1
            reason = {403: "Forbidden", 409: "Conflict", 422: "Invalid"}.get(code, "InternalError")
            return _status(code, reason, message)
        manager = request.params.get("fieldManager")
        if not manager:
            return _status(422, "Invalid", "fieldManager is required for apply patch")
        body = request.data
        if body is None:
            body = yaml.safe_load(request.text or "{}")
        if not isinstance(body, dict):
            return _status(400, "BadRequest", "apply body must be an object")
        body = copy.deepcopy(body)
        key = (request.resource, request.namespace, request.name)
        bus = self._buses[request.resource]
        async with self._lock:
            existing = self._lookup(key)
            created = existing is None or existing.deleted
            if created:
                body.setdefault("metadata", {})["name"] = request.name
                self._fill_new(request, body)
                if existing is None:
                    self._objects[key] = body
                else:
                    existing.create(body)
                self._applied[(*key, manager)] = copy.deepcopy(body)
                raw = self._objects[key].raw
                await bus.put({"type": "ADDED", "object": raw})
                orphan = self._is_orphan(raw)
            else:
                assert existing is not None
                live = existing.raw
                last = self._applied.get((*key, manager), {})
                applied_wo_status = {k: v for k, v in body.items() if k != "status"}
                merged = ssa_merge(live, last, applied_wo_status)
                meta = merged.setdefault("metadata", {})
                for server_field in ("uid", "creationTimestamp", "resourceVersion", "generation"):
                    if server_field in live.get("metadata", {}):
                        meta[server_field] = live["metadata"][server_field]
                self._applied[(*key, manager)] = copy.deepcopy(body)
                if merged == live:
                    return aiohttp.web.json_response(live, status=200)
                meta["resourceVersion"] = str(next(self._rv))
                if _essence(merged) != _essence(live):
                    meta["generation"] = int(live.get("metadata", {}).get("generation") or 1) + 1
                existing.history.append(merged)
                raw = existing.raw
                await bus.put({"type": "MODIFIED", "object": raw})
                return aiohttp.web.json_response(raw, status=200)
        if orphan:  # the real GC collects it a moment later
            await self._delete_now(key)
        return aiohttp.web.json_response(raw, status=201)

    def _is_orphan(self, raw: dict[str, Any]) -> bool:
        """Owned, but every owner is gone (uid no longer exists)."""
        owners = {o.get("uid") for o in raw.get("metadata", {}).get("ownerReferences") or []}
        if not owners:
            return False
        live = {
            o.raw.get("metadata", {}).get("uid") for _, o in self._objects.items() if not o.deleted
        }
        return not owners & live

    async def _delete_now(self, key: Any) -> None:
        async with self._lock:
            obj = self._objects[key]
            if obj.deleted:
                return
            raw = obj.raw
            obj.delete()
            await self._buses[key[0]].put({"type": "DELETED", "object": raw})

    async def _collect_garbage(self, owner_uid: str) -> None:
        victims: list[tuple[Any, Any, Any]] = []
        for key, obj in list(self._objects.items()):
            if obj.deleted:
                continue
            owners = obj.get("metadata", {}).get("ownerReferences") or []
            if any(o.get("uid") == owner_uid for o in owners):
                victims.append(key)
        for key in victims:
            async with self._lock:
                obj = self._objects[key]
                if obj.deleted:
                    continue
                raw = obj.raw
                uid = raw.get("metadata", {}).get("uid")
                obj.delete()
                await self._buses[key[0]].put({"type": "DELETED", "object": raw})
            if uid:
                await self._collect_garbage(uid)


def kmock_merge(live: Any, patch: Any) -> Any:
    """JSON merge patch (RFC 7386), as kmock applies it."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(live) if isinstance(live, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = kmock_merge(result.get(key), value)
    return result


def _status(code: int, reason: str, message: str) -> aiohttp.web.StreamResponse:
    return aiohttp.web.Response(
        status=code,
        content_type="application/json",
        text=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Status",
                "status": "Failure",
                "code": code,
                "reason": reason,
                "message": message,
            }
        ),
    )
