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

Server behaviours the provisioner depends on, each as the Kubernetes documentation describes it
(and pinned by a test in `tests/e2e/kube_emulator.rs`):
- field ownership: every write records which manager owns which fields (Apply and Update
  operations, subresources apart); an Update that changes a field takes it over; an apply that
  sets a field another manager owns to another value is a 409 conflict unless forced (force
  takes the field over); a field an applier stops applying is removed only when no other manager
  owns it; a manager left without fields disappears from `managedFields`;
- immutable fields: a PriorityClass `value`, a Deployment's or Job's `spec.selector`, a Job's
  `spec.template` and a Service's `spec.clusterIP` cannot change (422 Invalid);
- Services get a ClusterIP from the service CIDR (`--service-cidr`, default 10.100.0.0/16), whose
  first address is the `kubernetes` Service of `default`;
- Pod Security admission: a namespace's `pod-security.kubernetes.io/enforce` level refuses Pods
  that violate it (403 Forbidden, with the checks that failed), its `warn` level answers workload
  writes with a `Warning` header, and the Deployment controller cannot create the pods of a
  template its namespace refuses (`ReplicaFailure`, `FailedCreate`);
- ResourceQuota admission: with a quota on compute resources, a pod must declare them, and pods
  beyond the quota's `hard` limits are refused (directly: 403; through a Deployment: fewer
  available replicas and `ReplicaFailure`);
- service-account tokens and RBAC: `POST .../serviceaccounts/{name}/token` (TokenRequest) issues
  a bearer token for the service account; a request carrying one acts as
  `system:serviceaccount:{namespace}:{name}` and is authorized by the Roles, ClusterRoles and
  their bindings in the store (verbs, resources and subresources, API groups, resource names;
  403 Forbidden with the API server's message otherwise); discovery is open to it. Any other
  bearer token is the cluster administrator (the tests' kubeconfig).

With `--kubelet external`, the Deployment "controller" only admits pods (Pod Security, quotas) and
leaves readiness to a kubelet of the tests (`tests/src/kubelet/`), which writes the Deployment
status from the processes it runs; by default it marks admitted replicas ready at once.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextvars
import copy
import datetime
import hashlib
import ipaddress
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
# Bearer tokens of service accounts (TokenRequest) start with this.
SA_TOKEN_PREFIX = "sa."
TOKEN_REQUEST = re.compile(r"/api/v1/namespaces/([^/]+)/serviceaccounts/([^/]+)/token")
# A container image containing this marker never becomes ready.
NEVER_READY = "never-ready"
# Warnings of the request being served (the `Warning` response header).
WARNINGS: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("warnings", default=None)
# Absent from an object.
MISSING = object()

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


# --- field ownership (server-side apply) --------------------------------------------------------
# An owner is (manager, operation, subresource or ""); its fields are leaf paths with the values
# it set. Lists are atomic.


def get_path(obj: Any, path: tuple) -> Any:
    node = obj
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return MISSING
        node = node[key]
    return node


def owned_paths(fields: Obj) -> dict[tuple, Any]:
    """The leaf paths of a field set, without the empty root."""
    return {p: v for p, v in leaf_paths(fields).items() if p != ()}


Owners = dict[tuple[str, str, str], dict[tuple, Any]]


def after_update(owners: Owners, old: Obj | None, new: Obj, owner: tuple[str, str, str] | None, subresource: str | None = None) -> Owners:
    """Ownership after an Update: what the updater changed or added becomes its own (taken from
    every other manager), what it removed is nobody's."""
    area = (lambda o: {"status": o["status"]} if "status" in o else {}) if subresource == "status" else applied_fields
    before = owned_paths(area(old)) if old else {}
    after = owned_paths(area(new))
    changed = {p: v for p, v in after.items() if get_path(old or {}, p) != v}
    gone = {p for p in before if get_path(new, p) is MISSING}
    result: Owners = {}
    for other, fields in owners.items():
        kept = {p: v for p, v in fields.items() if p not in changed and p not in gone and get_path(new, p) is not MISSING}
        if kept:
            result[other] = kept
    if owner is not None and changed:
        result[owner] = {**result.get(owner, {}), **changed}
    return result


def paths_tree(paths) -> Obj:
    tree: Obj = {}
    for path in paths:
        node = tree
        for key in path:
            node = node.setdefault(key, {})
    return tree


def managed_fields(owners: Owners, previous: list[Obj] | None, acting: tuple[str, str, str] | None, api_version: str) -> list[Obj]:
    """`metadata.managedFields` for `owners` (times kept for owners other than the acting one)."""
    times = {(e.get("manager"), e.get("operation"), e.get("subresource", "")): (e.get("time"), e.get("apiVersion")) for e in previous or []}
    entries = []
    for owner in sorted(owners):
        manager, operation, subresource = owner
        time, version = times.get(owner, (None, None))
        entry: Obj = {
            "manager": manager,
            "operation": operation,
            "apiVersion": api_version if owner == acting or version is None else version,
            "time": now() if owner == acting or time is None else time,
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_v1(paths_tree(owners[owner])),
        }
        if subresource:
            entry["subresource"] = subresource
        entries.append(entry)
    return entries


def field_name(path: tuple) -> str:
    return "".join(f".{key}" for key in path)


def conflict_message(conflicts: list[tuple[tuple[str, str, str], tuple]], api_version: str) -> str:
    """Worded like the API server: `Apply failed with 1 conflict: conflict with "m" using v: .f`."""
    def who(owner: tuple[str, str, str]) -> str:
        manager, _, subresource = owner
        return f'"{manager}"' + (f' with subresource "{subresource}"' if subresource else "") + f" using {api_version}"
    if len(conflicts) == 1:
        owner, path = conflicts[0]
        return f"Apply failed with 1 conflict: conflict with {who(owner)}: {field_name(path)}"
    lines = "\n".join(f"- conflict with {who(owner)}: {field_name(path)}" for owner, path in conflicts)
    return f"Apply failed with {len(conflicts)} conflicts:\n{lines}"


# --- immutable fields ---------------------------------------------------------------------------


def go_selector(selector: Any) -> str:
    labels = ", ".join(f'"{k}":"{v}"' for k, v in sorted(((selector or {}).get("matchLabels") or {}).items()))
    return f"v1.LabelSelector{{MatchLabels:map[string]string{{{labels}}}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}}"


def immutable_violations(res: "Resource", old: Obj, new: Obj) -> list[tuple[str, str, str]]:
    """(field, reason, message) for each immutable field an update changes."""
    found = []
    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    if (res.group, res.plural) == ("scheduling.k8s.io", "priorityclasses") and old.get("value") != new.get("value"):
        found.append(("value", "FieldValueForbidden", "value: Forbidden: may not be changed in an update."))
    if (res.group, res.plural) in (("apps", "deployments"), ("apps", "replicasets"), ("apps", "statefulsets"), ("apps", "daemonsets"), ("batch", "jobs")):
        if old_spec.get("selector") is not None and old_spec.get("selector") != new_spec.get("selector"):
            found.append(("spec.selector", "FieldValueInvalid", f"spec.selector: Invalid value: {go_selector(new_spec.get('selector'))}: field is immutable"))
    if (res.group, res.plural) == ("batch", "jobs") and old_spec.get("template") != new_spec.get("template"):
        found.append(("spec.template", "FieldValueInvalid", "spec.template: Invalid value: core.PodTemplateSpec{...}: field is immutable"))
    if (res.group, res.plural) == ("", "services"):
        before, after = old_spec.get("clusterIP"), new_spec.get("clusterIP")
        if before and after and before != after:
            found.append(("spec.clusterIPs[0]", "FieldValueInvalid", f'spec.clusterIPs[0]: Invalid value: []string{{"{after}"}}: may not change once set'))
    return found


# --- Pod Security admission (https://kubernetes.io/docs/concepts/security/pod-security-standards/)

LEVELS = {"privileged": 0, "baseline": 1, "restricted": 2}
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
# Workload kinds and where their pod template is.
POD_TEMPLATES = {
    ("apps", "deployments"): ("spec", "template"),
    ("apps", "replicasets"): ("spec", "template"),
    ("apps", "statefulsets"): ("spec", "template"),
    ("apps", "daemonsets"): ("spec", "template"),
    ("batch", "jobs"): ("spec", "template"),
    ("batch", "cronjobs"): ("spec", "jobTemplate", "spec", "template"),
}


def containers_of(spec: Obj) -> list[Obj]:
    return [c for kind in ("initContainers", "containers", "ephemeralContainers") for c in spec.get(kind) or []]


def names(containers: list[Obj], noun: str = "container") -> str:
    quoted = ", ".join(f'"{c.get("name", "")}"' for c in containers)
    return f"{noun}s {quoted}" if len(containers) > 1 else f"{noun} {quoted}"


def pod_security_violations(level: str, spec: Obj) -> list[str]:
    """The checks of the Pod Security Standard `level` that a pod spec fails, worded like the
    admission controller's message."""
    if LEVELS.get(level, 0) == 0:
        return []
    found: list[str] = []
    pod_sc = spec.get("securityContext") or {}
    containers = containers_of(spec)
    sc = lambda c: c.get("securityContext") or {}  # noqa: E731
    hosts = [f"{f}=true" for f in ("hostNetwork", "hostPID", "hostIPC") if spec.get(f)]
    if hosts:
        found.append(f"host namespaces ({', '.join(hosts)})")
    privileged = [c for c in containers if sc(c).get("privileged")]
    if privileged:
        found.append(f"privileged ({names(privileged)} must not set securityContext.privileged=true)")
    added = [(c, cap) for c in containers for cap in (sc(c).get("capabilities") or {}).get("add") or [] if cap not in BASELINE_CAPABILITIES]
    if added:
        caps = ", ".join(sorted({f'"{cap}"' for _, cap in added}))
        found.append(f"non-default capabilities ({names([c for c, _ in added])} must not include {caps} in securityContext.capabilities.add)")
    host_paths = [v for v in spec.get("volumes") or [] if "hostPath" in v]
    if host_paths:
        found.append(f"hostPath volumes ({names(host_paths, 'volume')})")
    host_ports = [(c, p["hostPort"]) for c in containers for p in c.get("ports") or [] if p.get("hostPort")]
    if host_ports:
        ports = ", ".join(str(p) for _, p in host_ports)
        found.append(f"hostPort ({names([c for c, _ in host_ports])} uses hostPort{'s' if len(host_ports) > 1 else ''} {ports})")
    unconfined = (pod_sc.get("seccompProfile") or {}).get("type") == "Unconfined" or any((sc(c).get("seccompProfile") or {}).get("type") == "Unconfined" for c in containers)
    if unconfined:
        found.append('seccompProfile (pod or containers must not set securityContext.seccompProfile.type to "Unconfined")')
    if level != "restricted":
        return found
    restricted = [(v, t) for v in spec.get("volumes") or [] for t in v if t != "name" and t not in RESTRICTED_VOLUMES and t != "hostPath"]
    if restricted:
        found.append(f"restricted volume types ({names([v for v, _ in restricted], 'volume')} uses restricted volume type {', '.join(sorted({repr(t) for _, t in restricted}))})")
    escalating = [c for c in containers if sc(c).get("allowPrivilegeEscalation") is not False]
    if escalating:
        found.append(f"allowPrivilegeEscalation != false ({names(escalating)} must set securityContext.allowPrivilegeEscalation=false)")
    not_dropped = [c for c in containers if "ALL" not in ((sc(c).get("capabilities") or {}).get("drop") or [])]
    extra = [c for c in containers if any(cap != "NET_BIND_SERVICE" for cap in (sc(c).get("capabilities") or {}).get("add") or [])]
    if not_dropped or extra:
        parts = []
        if not_dropped:
            parts.append(f'{names(not_dropped)} must set securityContext.capabilities.drop=["ALL"]')
        if extra:
            parts.append(f"{names(extra)} must not include capabilities other than \"NET_BIND_SERVICE\" in securityContext.capabilities.add")
        found.append(f"unrestricted capabilities ({'; '.join(parts)})")
    non_root = lambda c: sc(c).get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True  # noqa: E731
    rooted = [c for c in containers if not non_root(c)]
    if rooted:
        found.append(f"runAsNonRoot != true (pod or {names(rooted)} must set securityContext.runAsNonRoot=true)")
    uid_zero = [c for c in containers if sc(c).get("runAsUser", pod_sc.get("runAsUser")) == 0]
    if uid_zero:
        found.append(f"runAsUser=0 (pod or {names(uid_zero)} must not set runAsUser=0)")
    seccomp = lambda c: ((sc(c).get("seccompProfile") or pod_sc.get("seccompProfile")) or {}).get("type")  # noqa: E731
    no_seccomp = [c for c in containers if seccomp(c) not in ("RuntimeDefault", "Localhost")]
    if no_seccomp:
        found.append(f'seccompProfile (pod or {names(no_seccomp)} must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")')
    return found


def enforced_level(namespace: Obj | None, mode: str = "enforce") -> tuple[str, str]:
    labels = ((namespace or {}).get("metadata") or {}).get("labels") or {}
    level = labels.get(f"pod-security.kubernetes.io/{mode}", "privileged")
    version = labels.get(f"pod-security.kubernetes.io/{mode}-version", "latest")
    return level, version


# --- ResourceQuota admission (https://kubernetes.io/docs/concepts/policy/resource-quotas/) ------

QUANTITY_SUFFIXES = {
    "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}
COMPUTE = ("requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "cpu", "memory")


def quantity(value: Any) -> float:
    text = str(value).strip()
    m = re.match(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$", text)
    if not m or m.group(2) not in QUANTITY_SUFFIXES:
        raise bad_request(f"quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {text!r}")
    return float(m.group(1)) * QUANTITY_SUFFIXES[m.group(2)]


def pod_usage(spec: Obj) -> dict[str, float | None]:
    """What one pod counts against a quota; None where a container does not say."""
    usage: dict[str, float | None] = {"pods": 1}
    for resource in ("cpu", "memory"):
        for kind in ("requests", "limits"):
            total: float | None = 0.0
            for c in spec.get("containers") or []:
                resources = c.get("resources") or {}
                # Requests default to limits.
                value = (resources.get(kind) or {}).get(resource)
                if value is None and kind == "requests":
                    value = (resources.get("limits") or {}).get(resource)
                if value is None:
                    total = None
                    break
                total += quantity(value)
            usage[f"{kind}.{resource}"] = total
        usage[resource] = usage[f"requests.{resource}"]
    return usage


def missing_for_quota(quota: Obj, spec: Obj) -> list[str]:
    """`limits.cpu for: app` for each compute resource a quota limits and a container lacks."""
    hard = (quota.get("spec") or {}).get("hard") or {}
    missing = []
    for key in sorted(k for k in hard if k in COMPUTE):
        kind, _, resource = key.rpartition(".")
        kind = kind or "requests"
        lacking = []
        for c in spec.get("containers") or []:
            resources = c.get("resources") or {}
            if (resources.get(kind) or {}).get(resource) is None and (kind == "limits" or (resources.get("limits") or {}).get(resource) is None):
                lacking.append(c.get("name", ""))
        if lacking:
            missing.append(f"{key} for: {','.join(lacking)}")
    return missing


def fmt_quantity(key: str, value: float) -> str:
    if key.endswith("cpu") and value != int(value):
        return f"{round(value * 1000)}m"
    return str(int(value))


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
    def __init__(self, resources: dict[tuple[str, str, str], Resource], service_cidr: str = "10.100.0.0/16"):
        self.resources = resources
        # (group, plural, namespace or "", name) -> object
        self.objects: dict[tuple[str, str, str, str], Obj] = {}
        # object key -> its owners and the fields each owns
        self.owners: dict[tuple, Owners] = {}
        # The owner of the write in progress (its managedFields entry gets the time of the write).
        self.acting: tuple[str, str, str] | None = None
        self.service_cidr = ipaddress.ip_network(service_cidr)
        self.rv = 0
        self.events: collections.deque[tuple[int, str, tuple[str, str], Obj]] = collections.deque(maxlen=EVENT_HISTORY)
        self.changed = asyncio.Condition()
        self.tasks: set[asyncio.Task] = set()
        # "emulated": admitted replicas are ready at once; "external": a kubelet writes status.
        self.kubelet = "emulated"
        # Service-account bearer tokens issued by TokenRequest -> (namespace, name).
        self.tokens: dict[str, tuple[str, str]] = {}
        ns = resources[("", "v1", "namespaces")]
        for name in BUILTIN_NAMESPACES:
            self.write(ns, None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}, created=True)
        # The API server's own Service: the first address of the service CIDR, port 443.
        kubernetes = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": str(next(self.service_cidr.hosts())), "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 443}]},
        }
        self.write(resources[("", "v1", "services")], "default", kubernetes, created=True)

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

    def write(self, res: Resource, namespace: str | None, obj: Obj, *, created: bool, dry_run: bool = False, owners: Owners | None = None, admit: bool = True) -> Obj:
        key = self.key(res, namespace, obj["metadata"]["name"])
        old = None if created else self.objects.get(key)
        self.stamp(res, obj, old)
        if namespace:
            obj["metadata"]["namespace"] = namespace
        else:
            obj["metadata"].pop("namespace", None)
        if admit:
            self.admit(res, namespace, old, obj)
        if owners is not None:
            if owners:
                previous = (old or {}).get("metadata", {}).get("managedFields")
                obj["metadata"]["managedFields"] = managed_fields(owners, previous, self.acting, res.api_version)
            else:
                obj["metadata"].pop("managedFields", None)
        if old is not None and unchanged(old, obj):
            # Like the API server: a write that changes nothing keeps the resourceVersion and
            # sends no watch event (a no-op server-side apply is how clients detect convergence).
            return copy.deepcopy(old)
        if dry_run:
            obj["metadata"]["resourceVersion"] = str(self.rv)
            return copy.deepcopy(obj)
        if owners is not None:
            self.owners[key] = owners
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.objects[key] = obj
        self.notify("ADDED" if old is None else "MODIFIED", res, obj)
        if res.group == "apps" and res.plural == "deployments" and (old is None or old.get("spec") != obj.get("spec")):
            self.schedule_deployment(res, namespace or "", obj["metadata"]["name"])
        if res.plural in ("resourcequotas", "namespaces") and res.group == "":
            # Quotas and Pod Security levels change what the Deployment controller may create.
            changed_ns = namespace if res.plural == "resourcequotas" else obj["metadata"]["name"]
            deployments = self.resources[("apps", "v1", "deployments")]
            for group, plural, ns, name in list(self.objects):
                if (group, plural) == ("apps", "deployments") and ns == changed_ns:
                    self.schedule_deployment(deployments, ns, name)
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

    # -- admission --

    def admit(self, res: Resource, namespace: str | None, old: Obj | None, obj: Obj) -> None:
        """Validation and admission of a write: immutable fields, ClusterIP allocation, Pod
        Security, ResourceQuota."""
        name = obj["metadata"]["name"]
        kind_name = f"{res.kind}.{res.group}" if res.group else res.kind
        if old is not None:
            violations = immutable_violations(res, old, obj)
            if violations:
                causes = [{"reason": reason, "message": message.split(": ", 1)[1], "field": field} for field, reason, message in violations]
                raise ApiError(422, "Invalid", f'{kind_name} "{name}" is invalid: {", ".join(m for _, _, m in violations)}', {"name": name, "group": res.group, "kind": res.kind, "causes": causes})
        if (res.group, res.plural) == ("apps", "deployments"):
            # Defaulted like the API server does: a Deployment without replicas runs one.
            obj.setdefault("spec", {}).setdefault("replicas", 1)
        if (res.group, res.plural) == ("", "services"):
            spec = obj.setdefault("spec", {})
            if spec.get("type", "ClusterIP") != "ExternalName" and spec.get("clusterIP") != "None":
                if not spec.get("clusterIP"):
                    spec["clusterIP"] = ((old or {}).get("spec") or {}).get("clusterIP") or self.allocate_ip()
                spec["clusterIPs"] = [spec["clusterIP"]]
        if (res.group, res.plural) == ("", "pods") and old is None:
            self.admit_pod(namespace or "", name, obj.get("spec") or {})
        template = POD_TEMPLATES.get((res.group, res.plural))
        if template and namespace:
            level, version = enforced_level(self.objects.get(("", "namespaces", "", namespace)), "warn")
            found_template = get_path(obj, template)
            spec = (found_template if isinstance(found_template, dict) else {}).get("spec") or {}
            found = pod_security_violations(level, spec)
            warnings = WARNINGS.get()
            if found and warnings is not None:
                warnings.append(f'would violate PodSecurity "{level}:{version}": {", ".join(found)}')

    def allocate_ip(self) -> str:
        used = {(o.get("spec") or {}).get("clusterIP") for (g, p, _, _), o in self.objects.items() if (g, p) == ("", "services")}
        for index, address in enumerate(self.service_cidr.hosts()):
            if index > 0 and str(address) not in used:
                return str(address)
        raise ApiError(500, "InternalError", "Internal error occurred: failed to allocate a serviceIP: range is full")

    def pod_refusal(self, namespace: str, pod_name: str, spec: Obj, used: dict[str, float]) -> str | None:
        """Why Pod Security or a ResourceQuota of `namespace` refuses a pod, or None."""
        level, version = enforced_level(self.objects.get(("", "namespaces", "", namespace)))
        found = pod_security_violations(level, spec)
        if found:
            return f'pods "{pod_name}" is forbidden: violates PodSecurity "{level}:{version}": {", ".join(found)}'
        usage = pod_usage(spec)
        for quota in self.quotas(namespace):
            qname = quota["metadata"]["name"]
            missing = missing_for_quota(quota, spec)
            if missing:
                return f'pods "{pod_name}" is forbidden: failed quota: {qname}: must specify {"; ".join(missing)}'
            declared = (quota.get("spec") or {}).get("hard") or {}
            hard = {k: quantity(v) for k, v in declared.items() if k in COMPUTE or k == "pods"}
            over = [k for k, limit in sorted(hard.items()) if used.get(k, 0) + (usage.get(k) or 0) > limit + 1e-9]
            if over:
                requested = ",".join(f"{k}={fmt_quantity(k, usage.get(k) or 0)}" for k in over)
                in_use = ",".join(f"{k}={fmt_quantity(k, used.get(k, 0))}" for k in over)
                limited = ",".join(f"{k}={declared[k]}" for k in over)
                return f'pods "{pod_name}" is forbidden: exceeded quota: {qname}, requested: {requested}, used: {in_use}, limited: {limited}'
        return None

    def quotas(self, namespace: str) -> list[Obj]:
        return [o for (g, p, ns, _), o in sorted(self.objects.items()) if (g, p, ns) == ("", "resourcequotas", namespace)]

    def namespace_usage(self, namespace: str, skip: tuple | None = None) -> dict[str, float]:
        """What the pods of a namespace use: Pod objects and the Deployments' available pods."""
        used: dict[str, float] = collections.defaultdict(float)
        for key, obj in self.objects.items():
            group, plural, ns, _ = key
            if ns != namespace or key == skip:
                continue
            if (group, plural) == ("", "pods"):
                spec, count = obj.get("spec") or {}, 1
            elif (group, plural) == ("apps", "deployments"):
                spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
                count = (obj.get("status") or {}).get("availableReplicas", 0)
            else:
                continue
            try:
                usage = pod_usage(spec)
            except ApiError:
                continue
            for k, v in usage.items():
                used[k] += (v or 0) * count
        return used

    def admit_pod(self, namespace: str, name: str, spec: Obj) -> None:
        why = self.pod_refusal(namespace, name, spec, self.namespace_usage(namespace))
        if why:
            raise ApiError(403, "Forbidden", why, {"name": name, "kind": "pods"})

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
        owners = after_update({}, None, obj, self.updater(params, None))
        return self.write(res, namespace, obj, created=True, dry_run=dry_run, owners=owners)

    def updater(self, params, subresource: str | None) -> tuple[str, str, str] | None:
        """The owner an Update with these parameters records (none without a fieldManager)."""
        manager = params.get("fieldManager")
        self.acting = (manager, "Update", subresource or "") if manager else None
        return self.acting

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
        obj["metadata"].pop("managedFields", None)
        key = self.key(res, namespace, name)
        owners = after_update(self.owners.get(key, {}), old, obj, self.updater(params, subresource), subresource)
        return self.write(res, namespace, obj, created=False, dry_run=dry_run, owners=owners)

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
        key = self.key(res, namespace, name)
        owners = after_update(self.owners.get(key, {}), old, obj, self.updater(params, subresource), subresource)
        return self.write(res, namespace, obj, created=False, dry_run=dry_run, owners=owners)

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
        owner = (manager, "Apply", subresource or "")
        self.acting = owner
        old = self.objects.get(key)
        if subresource == "status":
            owned = {"status": copy.deepcopy(body.get("status"))} if "status" in body else {}
        else:
            owned = applied_fields(body)
        new_paths = owned_paths(owned)
        if old is None:
            if subresource:
                raise not_found(res, name)
            self.require_namespace(namespace)
            obj = {"metadata": {"name": name}}
            deep_merge(obj, owned)
            return self.write(res, namespace, obj, created=True, dry_run=dry_run, owners={owner: new_paths})
        owners = copy.deepcopy(self.owners.get(key, {}))
        # A field another manager owns may be set to its current value (ownership is then
        # shared); setting it to another value is a conflict.
        conflicts = [
            (other, path)
            for other, fields in sorted(owners.items())
            if other != owner
            for path, value in new_paths.items()
            if path in fields and get_path(old, path) != value
        ]
        if conflicts and not force:
            causes = [{"reason": "FieldManagerConflict", "message": f'conflict with "{o[0]}"', "field": field_name(p)} for o, p in conflicts]
            raise ApiError(409, "Conflict", conflict_message(conflicts, res.api_version), {"name": name, "group": res.group, "kind": res.plural, "causes": causes})
        for other, path in conflicts:
            # Forced: the field changes hands.
            owners[other].pop(path, None)
        previous = owners.pop(owner, {})
        shared = {p for fields in owners.values() for p in fields}
        obj = copy.deepcopy(old)
        # A field this manager no longer applies goes, unless another manager owns it too.
        for path in previous:
            if path not in new_paths and path not in shared:
                remove_path(obj, path)
        deep_merge(obj, owned)
        # Managers left without fields disappear; the applier keeps its entry.
        owners = {o: f for o, f in owners.items() if f}
        owners[owner] = new_paths
        return self.write(res, namespace, obj, created=False, dry_run=dry_run, owners=owners)

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
        self.owners.pop(key, None)
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
            # The ReplicaSet controller creates pods through admission: Pod Security and quotas
            # may refuse some or all of them.
            template = spec.get("template") or {}
            digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
            pod_name = f"{name}-{digest[:10]}-{digest[10:15]}"
            template_spec = template.get("spec") or {}
            used = self.namespace_usage(namespace, skip=self.key(res, namespace, name))
            created, refusal = 0, None
            while created < replicas:
                try:
                    refusal = self.pod_refusal(namespace, pod_name, template_spec, used)
                    usage = pod_usage(template_spec)
                except ApiError as e:
                    refusal = f'Pod "{pod_name}" is invalid: {e.message}'
                if refusal:
                    break
                for k, v in usage.items():
                    used[k] = used.get(k, 0) + (v or 0)
                created += 1
            if self.kubelet == "external" and not refusal:
                # The tests' kubelet runs the pods and writes the status it observes.
                return
            if refusal:
                status.update({"replicas": created, "updatedReplicas": created, "readyReplicas": created, "availableReplicas": created, "unavailableReplicas": replicas - created})
                available = "True" if created >= replicas else "False"
                status["conditions"] = [
                    {"type": "Available", "status": available, "reason": "MinimumReplicasUnavailable", "message": "Deployment does not have minimum availability.", "lastUpdateTime": stamp, "lastTransitionTime": stamp},
                    {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated", "message": f'ReplicaSet "{name}-{digest[:10]}" is progressing.', "lastUpdateTime": stamp, "lastTransitionTime": stamp},
                    {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": refusal, "lastUpdateTime": stamp, "lastTransitionTime": stamp},
                ]
            elif never_ready:
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
            self.write(res, namespace, updated, created=False, admit=False)

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
    def __init__(self, kmock_handler: Any, service_cidr: str = "10.100.0.0/16"):
        self.kmock = kmock_handler
        resources = {}
        for ref in kmock_handler.resources:
            info = kmock_handler.resources[ref]
            resources[(ref.group, ref.version, ref.plural)] = Resource(ref.group, ref.version, ref.plural, info)
        self.resources = resources
        self.store = Store(resources, service_cidr)
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
        if (res.group, res.plural) == ("", "pods"):
            # A pod's log is served by the kubelet of its node (`pod_log`).
            res.subresources.add("log")
        if subresource is not None and (subresource not in res.subresources or len(rest) > 3):
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})", {})
        return res, namespace, name, subresource

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        try:
            identity = self.authenticate(request)
            if request.method == "POST" and TOKEN_REQUEST.fullmatch(request.path):
                return self.token_request(request, identity)
            routed = self.route(request.path)
            if identity is not None and routed is not None:
                self.authorize(request, identity, *routed)
            if routed is None:
                try:
                    return await self.kmock(request)
                finally:
                    # kmock keeps every request for assertions; we never assert on them.
                    self.kmock._requests.clear()
            warnings: list[str] = []
            WARNINGS.set(warnings)
            response = await self.serve(request, *routed)
            for warning in warnings:
                escaped = warning.replace("\\", "\\\\").replace('"', '\\"')
                response.headers.add("Warning", f'299 - "{escaped}"')
            return response
        except ApiError as e:
            return aiohttp.web.json_response(e.status(), status=e.code)

    # -- service-account tokens and RBAC --

    def authenticate(self, request) -> tuple[str, str] | None:
        """The service account a request acts as; None for the cluster administrator."""
        header = request.headers.get("Authorization", "")
        token = header[len("Bearer "):].strip() if header.startswith("Bearer ") else ""
        if not token.startswith(SA_TOKEN_PREFIX):
            return None
        identity = self.store.tokens.get(token)
        if identity is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        return identity

    def token_request(self, request, identity) -> aiohttp.web.StreamResponse:
        namespace, name = TOKEN_REQUEST.fullmatch(request.path).groups()
        if identity is not None:
            self.authorize(request, identity, self.resources[("", "v1", "serviceaccounts")], namespace, name, "token")
        self.store.get(self.resources[("", "v1", "serviceaccounts")], namespace, name)
        token = f"{SA_TOKEN_PREFIX}{uuid.uuid4().hex}{uuid.uuid4().hex}"
        self.store.tokens[token] = (namespace, name)
        expires = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return aiohttp.web.json_response({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": now()},
            "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600},
            "status": {"token": token, "expirationTimestamp": expires},
        }, status=201)

    def authorize(self, request, identity: tuple[str, str], res: Resource, namespace, name, subresource) -> None:
        """RBAC as https://kubernetes.io/docs/reference/access-authn-authz/rbac/ describes it."""
        method, params = request.method, request.query
        if method == "GET":
            verb = "get" if name else ("watch" if params.get("watch") in ("true", "1") else "list")
        else:
            verb = {"POST": "create", "PUT": "update", "PATCH": "patch",
                    "DELETE": "delete" if name else "deletecollection"}.get(method, method.lower())
        resource = f"{res.plural}/{subresource}" if subresource else res.plural
        sa_namespace, sa_name = identity
        user = f"system:serviceaccount:{sa_namespace}:{sa_name}"
        groups = {"system:serviceaccounts", f"system:serviceaccounts:{sa_namespace}", "system:authenticated"}

        def bound(binding: Obj) -> bool:
            for subject in binding.get("subjects") or []:
                kind = subject.get("kind")
                if kind == "ServiceAccount" and subject.get("name") == sa_name and subject.get("namespace", binding["metadata"].get("namespace")) == sa_namespace:
                    return True
                if kind == "User" and subject.get("name") == user:
                    return True
                if kind == "Group" and subject.get("name") in groups:
                    return True
            return False

        def allows(rule: Obj) -> bool:
            return (
                any(g in ("*", res.group) for g in rule.get("apiGroups") or [])
                and any(r in ("*", resource) or (subresource and r == f"*/{subresource}") for r in rule.get("resources") or [])
                and any(v in ("*", verb) for v in rule.get("verbs") or [])
                and (not rule.get("resourceNames") or name in rule["resourceNames"])
            )

        objects = self.store.objects
        bindings = [o for (g, p, ns, _), o in objects.items() if g == "rbac.authorization.k8s.io" and p == "clusterrolebindings"]
        if namespace:
            bindings += [o for (g, p, ns, _), o in objects.items() if g == "rbac.authorization.k8s.io" and p == "rolebindings" and ns == namespace]
        for binding in bindings:
            if not bound(binding):
                continue
            ref = binding.get("roleRef") or {}
            scope = "" if ref.get("kind") == "ClusterRole" else binding["metadata"].get("namespace", "")
            plural = "clusterroles" if ref.get("kind") == "ClusterRole" else "roles"
            role = objects.get(("rbac.authorization.k8s.io", plural, scope, ref.get("name", "")))
            if role and any(allows(rule) for rule in role.get("rules") or []):
                return
        what = f'{res.qualified} "{name}"' if name else res.qualified
        where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
        raise ApiError(403, "Forbidden", f'{what} is forbidden: User "{user}" cannot {verb} resource "{resource}" in API group "{res.group}"{where}',
                       {"name": name or "", "group": res.group, "kind": resource})

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
        if subresource == "log" and method == "GET":
            return await self.pod_log(request, res, namespace, name)
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

    async def pod_log(self, request, res: Resource, namespace, name) -> aiohttp.web.StreamResponse:
        """`GET .../pods/{name}/log`: as the API server does, asks the kubelet of the pod's node
        (`spec.nodeName`; the Node's InternalIP and `status.daemonEndpoints.kubeletEndpoint.Port`)
        for `/containerLogs/{namespace}/{pod}/{container}` and relays its answer as text."""
        pod = self.store.get(res, namespace, name)
        spec = pod.get("spec") or {}
        containers = [c.get("name") for c in spec.get("containers") or []]
        container = request.query.get("container")
        if not container:
            if len(containers) != 1:
                raise bad_request(f'a container name must be specified for pod {name}, choose one of: [{" ".join(containers)}]')
            container = containers[0]
        elif container not in containers + [c.get("name") for c in spec.get("initContainers") or []]:
            raise bad_request(f'container {container} is not valid for pod {name}')
        node_name = spec.get("nodeName")
        node = self.store.objects.get(("", "nodes", "", node_name or ""))
        if node is None:
            raise bad_request(f'pod {name} does not have a host assigned')
        status = node.get("status") or {}
        address = next((a.get("address") for a in status.get("addresses") or [] if a.get("type") == "InternalIP"), None)
        port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
        if not address or not port:
            raise ApiError(500, "InternalError", f"node {node_name} has no kubelet endpoint")
        query = {k: v for k, v in request.query.items() if k in ("tailLines", "limitBytes", "timestamps", "previous")}
        url = f"http://{address}:{port}/containerLogs/{namespace}/{name}/{container}"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
                async with session.get(url, params=query) as answer:
                    text = await answer.text()
                    if answer.status != 200:
                        raise bad_request(text.strip() or f"the kubelet answered {answer.status}")
        except aiohttp.ClientError as e:
            raise ApiError(500, "InternalError", f"Get \"{url}\": {e}")
        return aiohttp.web.Response(text=text, content_type="text/plain")

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
        # Scaling is an Update of `spec.replicas` through the `scale` subresource: the scaler
        # takes the field over (https://kubernetes.io/docs/reference/using-api/server-side-apply/).
        key = store.key(res, namespace, name)
        owners = after_update(store.owners.get(key, {}), obj, updated, store.updater(request.query, "scale"))
        result = store.write(res, namespace, updated, created=False, dry_run=dry_run, owners=owners)
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
    parser.add_argument("--service-cidr", default="10.100.0.0/16", help="where Services get their ClusterIP; its first address is the `kubernetes` Service")
    parser.add_argument("--kubelet", choices=("emulated", "external"), default="emulated", help="`external`: a kubelet of the tests runs the pods and writes Deployment status")
    args = parser.parse_args()

    async with kmock.KubernetesEmulator() as k8s:
        k8s.resources.load_bundled()
        emulator = Emulator(k8s, args.service_cidr)
        emulator.store.kubelet = args.kubelet
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
