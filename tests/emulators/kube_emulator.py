"""A Kubernetes API emulator for Stacksmith's tests: kmock 0.8 plus an object store.

Usage: python kube_emulator.py [--host 127.0.0.1] [--port 0]

Prints one line `READY http://127.0.0.1:PORT` on stdout once it accepts requests; exits cleanly
on SIGTERM/SIGINT.

Design: one aiohttp server. Discovery (`/`, `/version`, `/api`, `/apis`, `/api/v1`,
`/apis/{group}[/{version}]`) is delegated in-process to kmock's `KubernetesEmulator` loaded with
its bundled resource list (kmock's request log is cleared after each call, so it cannot grow).
Requests for objects (`.../{plural}[/{name}[/{subresource}]]`) are served by the `Store` below,
which uses the same resource list for kinds and scopes and adds what kmock 0.8 lacks:
server-side apply with managedFields, PUT, namespaces, uid/resourceVersion/creationTimestamp/
generation, standard Status reasons, selectors, pagination, dryRun, watches with
resourceVersion, Deployment `/scale` and a minimal Deployment status controller.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import copy
import datetime
import json
import re
import signal
import socket
import sys
import uuid
from typing import Any

import aiohttp.web
import jsonpatch
import kmock

try:
    import yaml
except ImportError:  # pragma: no cover - PyYAML is pinned in tests/requirements/emulators.txt
    yaml = None

# Namespaces every cluster has.
BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
# Watch events kept for watches that resume from a resourceVersion; older ones get 410 Gone.
EVENT_HISTORY = 10_000
# Delay of the Deployment "controller" after a spec change.
CONTROLLER_DELAY = 0.05
# A container image containing this marker never becomes ready.
NEVER_READY = "never-ready"

Obj = dict[str, Any]


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """A Kubernetes `Status` failure."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    def status(self) -> Obj:
        return {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


def not_found(res: "Resource", name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{res.qualified} "{name}" not found',
        {"name": name, "group": res.group, "kind": res.plural},
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


class Resource:
    """One kind served by the emulator (from kmock's bundled resource list)."""

    def __init__(self, group: str, version: str, plural: str, info: Any):
        self.group = group
        self.version = version
        self.plural = plural
        self.kind = info.kind or plural.capitalize()
        self.namespaced = bool(info.namespaced)
        self.subresources = set(info.subresources)
        self.api_version = f"{group}/{version}" if group else version
        self.qualified = f"{plural}.{group}" if group else plural


# --- dict helpers -------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def deep_merge(target: Obj, source: Obj) -> None:
    """Merges `source` into `target` in place: maps recursively, lists and scalars replaced."""
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            deep_merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def leaf_paths(obj: Any, prefix: tuple = ()) -> dict[tuple, Any]:
    """The fields set by `obj`: paths of non-map values (lists are atomic) and of empty maps."""
    if isinstance(obj, dict) and obj:
        paths: dict[tuple, Any] = {}
        for key, value in obj.items():
            paths.update(leaf_paths(value, prefix + (key,)))
        return paths
    return {prefix: obj}


def remove_path(obj: Obj, path: tuple) -> None:
    """Removes a field and the maps it leaves empty (but not the top-level ones)."""
    parents = []
    node: Any = obj
    for key in path[:-1]:
        if not isinstance(node, dict) or key not in node:
            return
        parents.append((node, key))
        node = node[key]
    if isinstance(node, dict):
        node.pop(path[-1], None)
    for parent, key in reversed(parents[1:]):
        if parent[key] == {}:
            del parent[key]
        else:
            break


def fields_v1(obj: Any) -> Obj:
    """A `FieldsV1` description of the fields of `obj` (lists as atomic)."""
    if not isinstance(obj, dict):
        return {}
    return {f"f:{key}": fields_v1(value) for key, value in obj.items()}


def applied_fields(body: Obj) -> Obj:
    """The part of an applied object its manager owns (not identity nor status)."""
    owned = {k: copy.deepcopy(v) for k, v in body.items() if k not in ("apiVersion", "kind", "metadata", "status")}
    metadata = body.get("metadata") or {}
    owned_meta = {k: copy.deepcopy(metadata[k]) for k in ("labels", "annotations", "finalizers", "ownerReferences") if k in metadata}
    if owned_meta:
        owned["metadata"] = owned_meta
    return owned


# --- selectors ----------------------------------------------------------------------------------


def split_selector(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


LABEL_SET = re.compile(r"^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$")
LABEL_CMP = re.compile(r"^([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)$")
LABEL_KEY = re.compile(r"^(!?)\s*([\w./-]+)$")


def label_matcher(selector: str | None):
    if not selector:
        return lambda labels: True
    checks = []
    for part in split_selector(selector):
        if m := LABEL_SET.match(part):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if op == "in":
                checks.append(lambda l, k=key, vs=values: k in l and l[k] in vs)
            else:
                checks.append(lambda l, k=key, vs=values: k not in l or l[k] not in vs)
        elif m := LABEL_CMP.match(part):
            key, op, value = m.groups()
            if op == "!=":
                checks.append(lambda l, k=key, v=value: l.get(k) != v)
            else:
                checks.append(lambda l, k=key, v=value: l.get(k) == v)
        elif m := LABEL_KEY.match(part):
            negate, key = m.groups()
            if negate:
                checks.append(lambda l, k=key: k not in l)
            else:
                checks.append(lambda l, k=key: k in l)
        else:
            raise bad_request(f"unable to parse requirement: {part!r}")
    return lambda labels: all(check(labels) for check in checks)


def field_matcher(selector: str | None):
    if not selector:
        return lambda obj: True
    checks = []
    for part in split_selector(selector):
        m = re.match(r"^([\w.]+)\s*(==|=|!=)\s*(.*)$", part)
        if not m:
            raise bad_request(f"invalid field selector: {part!r}")
        path, op, value = m.group(1).split("."), m.group(2), m.group(3)

        def get(obj: Obj, path: list[str] = path) -> str:
            node: Any = obj
            for key in path:
                node = node.get(key) if isinstance(node, dict) else None
            return "" if node is None else str(node)

        if op == "!=":
            checks.append(lambda o, g=get, v=value: g(o) != v)
        else:
            checks.append(lambda o, g=get, v=value: g(o) == v)
    return lambda obj: all(check(obj) for check in checks)


# --- the store ----------------------------------------------------------------------------------


class Store:
    def __init__(self, resources: dict[tuple[str, str, str], Resource]):
        self.resources = resources
        # (group, plural, namespace or "", name) -> object
        self.objects: dict[tuple[str, str, str, str], Obj] = {}
        # (object key, manager) -> the fields that manager last applied
        self.applied: dict[tuple[tuple, str], Obj] = {}
        self.rv = 0
        self.events: collections.deque[tuple[int, str, tuple[str, str], Obj]] = collections.deque(maxlen=EVENT_HISTORY)
        self.changed = asyncio.Condition()
        self.tasks: set[asyncio.Task] = set()
        ns = resources[("", "v1", "namespaces")]
        for name in BUILTIN_NAMESPACES:
            self.write(ns, None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}, created=True)

    # -- bookkeeping --

    def key(self, res: Resource, namespace: str | None, name: str) -> tuple[str, str, str, str]:
        return (res.group, res.plural, namespace or "", name)

    def stamp(self, res: Resource, obj: Obj, old: Obj | None) -> None:
        """Sets the server-side metadata of an object about to be written."""
        meta = obj.setdefault("metadata", {})
        obj["apiVersion"] = res.api_version
        obj["kind"] = res.kind
        if old is None:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now()
            meta["generation"] = 1
            if res.plural == "namespaces":
                obj.setdefault("spec", {"finalizers": ["kubernetes"]})
                obj["status"] = {"phase": "Active"}
                meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
        else:
            old_meta = old["metadata"]
            for field in ("uid", "creationTimestamp", "generation"):
                meta[field] = old_meta[field]
            if old_meta.get("managedFields") and "managedFields" not in meta:
                meta["managedFields"] = old_meta["managedFields"]
            if obj.get("spec") != old.get("spec"):
                meta["generation"] = old_meta["generation"] + 1

    def write(self, res: Resource, namespace: str | None, obj: Obj, *, created: bool, dry_run: bool = False) -> Obj:
        key = self.key(res, namespace, obj["metadata"]["name"])
        old = None if created else self.objects.get(key)
        self.stamp(res, obj, old)
        if namespace:
            obj["metadata"]["namespace"] = namespace
        else:
            obj["metadata"].pop("namespace", None)
        if old is not None and unchanged(old, obj):
            # Like the API server: a write that changes nothing keeps the resourceVersion and
            # sends no watch event (a no-op server-side apply is how clients detect convergence).
            return copy.deepcopy(old)
        if dry_run:
            obj["metadata"]["resourceVersion"] = str(self.rv)
            return copy.deepcopy(obj)
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.objects[key] = obj
        self.notify("ADDED" if old is None else "MODIFIED", res, obj)
        if res.group == "apps" and res.plural == "deployments" and (old is None or old.get("spec") != obj.get("spec")):
            self.schedule_deployment(res, namespace or "", obj["metadata"]["name"])
        return copy.deepcopy(obj)

    def notify(self, kind: str, res: Resource, obj: Obj) -> None:
        self.events.append((self.rv, kind, (res.group, res.plural), copy.deepcopy(obj)))

        async def wake() -> None:
            async with self.changed:
                self.changed.notify_all()

        self.spawn(wake())

    def spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def get(self, res: Resource, namespace: str | None, name: str) -> Obj:
        obj = self.objects.get(self.key(res, namespace, name))
        if obj is None:
            raise not_found(res, name)
        return obj

    def require_namespace(self, namespace: str | None) -> None:
        if namespace and ("", "namespaces", "", namespace) not in self.objects:
            raise not_found(self.resources[("", "v1", "namespaces")], namespace)

    def record_manager(self, obj: Obj, manager: str | None, operation: str, api_version: str, fields: Obj | None, subresource: str | None = None) -> None:
        if not manager:
            return
        entries = [
            e for e in obj["metadata"].get("managedFields") or []
            if not (e.get("manager") == manager and e.get("operation") == operation and e.get("subresource") == subresource)
        ]
        entry: Obj = {
            "manager": manager,
            "operation": operation,
            "apiVersion": api_version,
            "time": now(),
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_v1(fields if fields is not None else applied_fields(obj)),
        }
        if subresource:
            entry["subresource"] = subresource
        entries.append(entry)
        obj["metadata"]["managedFields"] = entries

    # -- operations --

    def create(self, res: Resource, namespace: str | None, body: Obj, params, dry_run: bool) -> Obj:
        self.require_namespace(namespace)
        meta = body.setdefault("metadata", {})
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            else:
                raise ApiError(422, "Invalid", f"{res.kind} is invalid: metadata.name: Required value", {"kind": res.kind})
        name = meta["name"]
        if self.key(res, namespace, name) in self.objects:
            raise ApiError(409, "AlreadyExists", f'{res.qualified} "{name}" already exists', {"name": name, "group": res.group, "kind": res.plural})
        obj = copy.deepcopy(body)
        obj["metadata"].pop("resourceVersion", None)
        obj["metadata"].pop("managedFields", None)
        self.record_manager(obj, params.get("fieldManager"), "Update", res.api_version, None)
        return self.write(res, namespace, obj, created=True, dry_run=dry_run)

    def replace(self, res: Resource, namespace: str | None, name: str, body: Obj, params, dry_run: bool, subresource: str | None) -> Obj:
        old = self.get(res, namespace, name)
        rv = (body.get("metadata") or {}).get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.qualified} "{name}": the object has been modified; please apply your changes to the latest version and try again', {"name": name, "group": res.group, "kind": res.plural})
        if subresource == "status":
            obj = copy.deepcopy(old)
            obj["status"] = copy.deepcopy(body.get("status"))
        else:
            obj = copy.deepcopy(body)
            obj.setdefault("metadata", {})["name"] = name
            if "status" in old and res.plural != "namespaces":
                obj["status"] = copy.deepcopy(old["status"])
            elif "status" in old:
                obj.setdefault("status", old["status"])
            obj["metadata"].setdefault("managedFields", old["metadata"].get("managedFields"))
            if obj["metadata"]["managedFields"] is None:
                del obj["metadata"]["managedFields"]
        self.record_manager(obj, params.get("fieldManager"), "Update", res.api_version, None, subresource)
        return self.write(res, namespace, obj, created=False, dry_run=dry_run)

    def patch(self, res: Resource, namespace: str | None, name: str, content_type: str, raw: bytes, params, dry_run: bool, subresource: str | None) -> Obj:
        if content_type == "application/apply-patch+yaml":
            return self.apply(res, namespace, name, parse_body(raw, yaml_ok=True), params, dry_run, subresource)
        old = self.get(res, namespace, name)
        try:
            patch = json.loads(raw or b"null")
        except ValueError as e:
            raise bad_request(f"invalid JSON patch: {e}")
        if content_type == "application/json-patch+json":
            try:
                obj = jsonpatch.apply_patch(old, patch)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                raise ApiError(422, "Invalid", f"the JSON patch cannot be applied: {e}")
        elif content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            if not isinstance(patch, dict):
                raise bad_request("a merge patch must be a JSON object")
            obj = merge_patch(old, patch)
        else:
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {content_type}")
        if subresource == "status":
            obj = {**copy.deepcopy(old), "status": obj.get("status")}
        elif "status" in old:
            obj["status"] = copy.deepcopy(old["status"])
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.qualified} "{name}": the object has been modified', {"name": name, "group": res.group, "kind": res.plural})
        obj.setdefault("metadata", {})["name"] = name
        self.record_manager(obj, params.get("fieldManager"), "Update", res.api_version, None, subresource)
        return self.write(res, namespace, obj, created=False, dry_run=dry_run)

    def apply(self, res: Resource, namespace: str | None, name: str, body: Any, params, dry_run: bool, subresource: str | None) -> Obj:
        if not isinstance(body, dict):
            raise bad_request("an applied configuration must be an object")
        manager = params.get("fieldManager")
        if not manager:
            raise bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch")
        meta = body.get("metadata") or {}
        if meta.get("name", name) != name:
            raise bad_request(f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})")
        if body.get("kind") not in (None, res.kind):
            raise bad_request(f"the kind of the object ({body.get('kind')}) does not match the URL ({res.kind})")
        force = params.get("force") == "true"
        key = self.key(res, namespace, name)
        # What a manager applied through the main resource and through /status are kept apart.
        owner = f"{manager}/{subresource}" if subresource else manager
        old = self.objects.get(key)
        if subresource == "status":
            owned = {"status": copy.deepcopy(body.get("status"))} if "status" in body else {}
        else:
            owned = applied_fields(body)
        if old is None:
            if subresource:
                raise not_found(res, name)
            self.require_namespace(namespace)
            obj = {"metadata": {"name": name}}
            deep_merge(obj, owned)
            self.record_manager(obj, manager, "Apply", res.api_version, owned)
            result = self.write(res, namespace, obj, created=True, dry_run=dry_run)
            if not dry_run:
                self.applied[(key, owner)] = owned
            return result
        new_paths = leaf_paths(owned)
        others = {
            path: value
            for (obj_key, other), fields in self.applied.items()
            if obj_key == key and other != owner
            for path, value in leaf_paths(fields).items()
        }
        if not force:
            conflicts = [p for p, v in new_paths.items() if p in others and others[p] != v]
            if conflicts:
                fields = ", ".join(".".join(map(str, p)) for p in conflicts)
                raise ApiError(409, "Conflict", f"Apply failed with {len(conflicts)} conflict(s): conflict with another manager: {fields}", {"name": name, "group": res.group, "kind": res.plural})
        obj = copy.deepcopy(old)
        previous = self.applied.get((key, owner), {})
        for path in leaf_paths(previous):
            if path not in new_paths and path not in others and path != ():
                remove_path(obj, path)
        deep_merge(obj, owned)
        self.record_manager(obj, manager, "Apply", res.api_version, owned, subresource)
        result = self.write(res, namespace, obj, created=False, dry_run=dry_run)
        if not dry_run:
            self.applied[(key, owner)] = owned
        return result

    def delete(self, res: Resource, namespace: str | None, name: str, dry_run: bool) -> Obj:
        key = self.key(res, namespace, name)
        obj = self.get(res, namespace, name)
        if dry_run:
            return copy.deepcopy(obj)
        self.remove(res, key)
        if res.plural == "namespaces":
            for other in [k for k in self.objects if k[2] == name]:
                other_res = next(r for r in self.resources.values() if (r.group, r.plural) == other[:2])
                self.remove(other_res, other)
        return copy.deepcopy(obj)

    def remove(self, res: Resource, key: tuple) -> None:
        obj = self.objects.pop(key)
        for applied_key in [k for k in self.applied if k[0] == key]:
            del self.applied[applied_key]
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.notify("DELETED", res, obj)

    def matching(self, res: Resource, namespace: str | None, params) -> list[Obj]:
        labels = label_matcher(params.get("labelSelector"))
        fields = field_matcher(params.get("fieldSelector"))
        found = []
        for (group, plural, ns, _), obj in sorted(self.objects.items()):
            if (group, plural) != (res.group, res.plural) or (namespace and ns != namespace):
                continue
            if labels(obj["metadata"].get("labels") or {}) and fields(obj):
                found.append(obj)
        return found

    def list(self, res: Resource, namespace: str | None, params) -> Obj:
        items = self.matching(res, namespace, params)
        start = int(params.get("continue") or 0)
        limit = int(params.get("limit") or 0)
        meta: Obj = {"resourceVersion": str(self.rv)}
        page = items[start:]
        if limit and len(page) > limit:
            page = page[:limit]
            meta["continue"] = str(start + limit)
            meta["remainingItemCount"] = len(items) - start - limit
        return {
            "apiVersion": res.api_version,
            "kind": f"{res.kind}List",
            "metadata": meta,
            "items": [copy.deepcopy(o) for o in page],
        }

    # -- the Deployment "controller" --

    def schedule_deployment(self, res: Resource, namespace: str, name: str) -> None:
        async def reconcile() -> None:
            await asyncio.sleep(CONTROLLER_DELAY)
            obj = self.objects.get(self.key(res, namespace, name))
            if obj is None:
                return
            spec = obj.get("spec") or {}
            replicas = spec.get("replicas", 1)
            containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
            never_ready = any(NEVER_READY in str(c.get("image", "")) for c in containers)
            stamp = now()
            status: Obj = {
                "observedGeneration": obj["metadata"]["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas,
            }
            if never_ready:
                status["readyReplicas"] = 0
                status["availableReplicas"] = 0
                status["unavailableReplicas"] = replicas
                status["conditions"] = [
                    {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable", "message": "Deployment does not have minimum availability.", "lastUpdateTime": stamp, "lastTransitionTime": stamp},
                    {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": f'ReplicaSet "{name}" has timed out progressing: image never becomes ready', "lastUpdateTime": stamp, "lastTransitionTime": stamp},
                ]
            else:
                status["readyReplicas"] = replicas
                status["availableReplicas"] = replicas
                status["conditions"] = [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability.", "lastUpdateTime": stamp, "lastTransitionTime": stamp},
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable", "message": f'ReplicaSet "{name}" has successfully progressed.', "lastUpdateTime": stamp, "lastTransitionTime": stamp},
                ]
            updated = copy.deepcopy(obj)
            updated["status"] = status
            self.write(res, namespace, updated, created=False)

        self.spawn(reconcile())


def comparable(obj: Obj) -> Obj:
    """The object without what every write changes: resourceVersion and managedFields times."""
    copied = copy.deepcopy(obj)
    meta = copied.get("metadata") or {}
    meta.pop("resourceVersion", None)
    entries = meta.get("managedFields") or []
    for entry in entries:
        entry.pop("time", None)
    entries.sort(key=lambda e: (e.get("manager", ""), e.get("operation", ""), e.get("subresource", "")))
    return copied


def unchanged(old: Obj, new: Obj) -> bool:
    return comparable(old) == comparable(new)


def scale_of(obj: Obj) -> Obj:
    spec = obj.get("spec") or {}
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    meta = obj["metadata"]
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta},
        "spec": {"replicas": spec.get("replicas", 1)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in sorted(selector.items())),
        },
    }


def parse_body(raw: bytes, yaml_ok: bool = False) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError as e:
        if yaml_ok and yaml is not None:
            try:
                return yaml.safe_load(raw)
            except yaml.YAMLError:
                pass
        raise bad_request(f"the request body is not valid JSON: {e}")


# --- HTTP ---------------------------------------------------------------------------------------


class Emulator:
    def __init__(self, kmock_handler: Any):
        self.kmock = kmock_handler
        resources = {}
        for ref in kmock_handler.resources:
            info = kmock_handler.resources[ref]
            resources[(ref.group, ref.version, ref.plural)] = Resource(ref.group, ref.version, ref.plural, info)
        self.resources = resources
        self.store = Store(resources)
        # Set on shutdown: open watches end at once.
        self.closing = asyncio.Event()

    def route(self, path: str) -> tuple[Resource, str | None, str | None, str | None] | None:
        """(resource, namespace, name, subresource) of an object path; None for discovery."""
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 3 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 4 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        res = self.resources.get((group, version, rest[0]))
        if res is None:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})", {})
        if res.namespaced != (namespace is not None) and len(rest) > 1:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})", {})
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        if subresource is not None and (subresource not in res.subresources or len(rest) > 3):
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})", {})
        return res, namespace, name, subresource

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        try:
            routed = self.route(request.path)
            if routed is None:
                try:
                    return await self.kmock(request)
                finally:
                    # kmock keeps every request for assertions; we never assert on them.
                    self.kmock._requests.clear()
            return await self.serve(request, *routed)
        except ApiError as e:
            return aiohttp.web.json_response(e.status(), status=e.code)

    async def serve(self, request, res: Resource, namespace, name, subresource) -> aiohttp.web.StreamResponse:
        store, params, method = self.store, request.query, request.method
        dry_run = "All" in params.getall("dryRun", [])
        ok = aiohttp.web.json_response
        if name is None:
            if method == "GET" and params.get("watch") in ("true", "1"):
                return await self.watch(request, res, namespace)
            if method == "GET":
                return ok(store.list(res, namespace, params))
            if method == "POST":
                body = parse_body(await request.read())
                if not isinstance(body, dict):
                    raise bad_request("the body must be an object")
                if res.namespaced:
                    body_ns = (body.get("metadata") or {}).get("namespace")
                    if body_ns and body_ns != namespace:
                        raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
                return ok(store.create(res, namespace, body, params, dry_run), status=201)
            if method == "DELETE":
                result = store.list(res, namespace, params)
                if not dry_run:
                    for obj in result["items"]:
                        store.delete(res, namespace or obj["metadata"].get("namespace"), obj["metadata"]["name"], False)
                return ok(result)
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on a collection")
        if subresource == "scale":
            return await self.scale(request, res, namespace, name, dry_run)
        if method == "GET":
            return ok(store.get(res, namespace, name))
        if method == "PUT":
            body = parse_body(await request.read())
            if not isinstance(body, dict):
                raise bad_request("the body must be an object")
            return ok(store.replace(res, namespace, name, body, params, dry_run, subresource))
        if method == "PATCH":
            content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
            existed = store.key(res, namespace, name) in store.objects
            result = store.patch(res, namespace, name, content_type, await request.read(), params, dry_run, subresource)
            return ok(result, status=200 if existed else 201)
        if method == "DELETE":
            # Clients (kube-rs among them) send DeleteOptions, dryRun included, as the body.
            options = parse_body(await request.read()) or {}
            if isinstance(options, dict) and "All" in (options.get("dryRun") or []):
                dry_run = True
            return ok(store.delete(res, namespace, name, dry_run))
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")

    async def scale(self, request, res: Resource, namespace, name, dry_run) -> aiohttp.web.StreamResponse:
        store = self.store
        obj = store.get(res, namespace, name)
        if request.method == "GET":
            return aiohttp.web.json_response(scale_of(obj))
        raw = await request.read()
        current = scale_of(obj)
        if request.method == "PUT":
            wanted = parse_body(raw)
        elif request.method == "PATCH":
            content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
            patch = parse_body(raw, yaml_ok=True)
            if content_type == "application/json-patch+json":
                wanted = jsonpatch.apply_patch(current, patch)
            else:
                wanted = merge_patch(current, patch)
        else:
            raise ApiError(405, "MethodNotAllowed", f"{request.method} is not supported on scale")
        replicas = ((wanted or {}).get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(422, "Invalid", "Scale.autoscaling is invalid: spec.replicas: must be a non-negative integer")
        updated = copy.deepcopy(obj)
        updated.setdefault("spec", {})["replicas"] = replicas
        store.record_manager(updated, request.query.get("fieldManager"), "Update", res.api_version, {"spec": {"replicas": replicas}}, "scale")
        result = store.write(res, namespace, updated, created=False, dry_run=dry_run)
        return aiohttp.web.json_response(scale_of(result))

    async def watch(self, request, res: Resource, namespace) -> aiohttp.web.StreamResponse:
        store, params = self.store, request.query
        labels = label_matcher(params.get("labelSelector"))
        fields = field_matcher(params.get("fieldSelector"))
        since = params.get("resourceVersion")
        timeout = float(params.get("timeoutSeconds") or 1800)
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        def wanted(kind_key, obj) -> bool:
            return (
                kind_key == (res.group, res.plural)
                and (namespace is None or obj["metadata"].get("namespace") == namespace)
                and labels(obj["metadata"].get("labels") or {})
                and fields(obj)
            )

        async def send(kind: str, obj: Obj) -> None:
            await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

        if not since or since == "0":
            # "Any" version: the current state as ADDED events, then changes.
            last = store.rv
            for obj in store.matching(res, namespace, params):
                await send("ADDED", obj)
        else:
            try:
                last = int(since)
            except ValueError:
                raise bad_request(f"invalid resourceVersion {since!r}")
            oldest = store.events[0][0] if store.events else store.rv + 1
            if last < oldest - 1 and last < store.rv:
                await send("ERROR", ApiError(410, "Expired", f"too old resource version: {last} ({oldest - 1})").status())
                await response.write_eof()
                return response
        try:
            while loop.time() < deadline and not self.closing.is_set():
                if request.transport is None or request.transport.is_closing():
                    return response  # the client went away
                for rv, kind, kind_key, obj in list(store.events):
                    if rv > last:
                        last = rv
                        if wanted(kind_key, obj):
                            await send(kind, obj)
                if params.get("allowWatchBookmarks") == "true":
                    await send("BOOKMARK", {"apiVersion": res.api_version, "kind": res.kind, "metadata": {"resourceVersion": str(last)}})
                async with store.changed:
                    try:
                        await asyncio.wait_for(store.changed.wait(), timeout=min(5.0, max(0.01, deadline - loop.time())))
                    except asyncio.TimeoutError:
                        pass
            await response.write_eof()
        except ConnectionResetError:  # the client went away mid-write
            pass
        return response


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    async with kmock.KubernetesEmulator() as k8s:
        k8s.resources.load_bundled()
        emulator = Emulator(k8s)
        app = aiohttp.web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", emulator.handle)
        runner = aiohttp.web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
        site = aiohttp.web.SockSite(runner, sock)
        await site.start()
        host, port = sock.getsockname()[:2]

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"READY http://{host}:{port}", flush=True)
        await stop.wait()
        emulator.closing.set()
        async with emulator.store.changed:
            emulator.store.changed.notify_all()
        for task in list(emulator.store.tasks):
            task.cancel()
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
