# Worker pools (`input.platform.controlplane.worker_pools`, address
# `controlplane.worker_pool.<name>`) and the namespace their tasks run in.
#
# - A pool's image (the team's image its tasks run in) is pinned to a tag other than `latest` or
#   to a digest, everywhere: a moving tag changes what every task runs without a change to the
#   stack.
# - The worker namespace (`controlplane.worker_namespace`, `workload` by default) enforces the
#   `restricted` Pod Security Standard in production (a warning elsewhere). Tasks of every team
#   run there, and a task cannot read the worker's key only because it runs as a non-root user
#   with no capabilities (CAP_SYS_PTRACE would bypass the worker's non-dumpable protection);
#   `restricted` makes the API server refuse any pod in that namespace that could.
package stacksmith.worker_pools

import rego.v1

import data.stacksmith.lib

controlplane := input.platform.controlplane

default worker_namespace := "workload"

worker_namespace := name if {
	name := controlplane.worker_namespace
	is_string(name)
}

deny contains lib.finding(sprintf("controlplane.worker_pool.%v", [name]), sprintf("worker pool `%v` runs its tasks in image `%v`, which is not pinned: use a version tag other than `latest`, or a digest (`@sha256:...`) (`controlplane.worker_pools.%v.image`)", [name, pool.image, name])) if {
	is_object(controlplane)
	some name, pool in controlplane.worker_pools
	is_string(pool.image)
	not pinned(pool.image)
}

# `repo@sha256:...` is pinned.
pinned(image) if contains(image, "@sha256:")

# `repo:tag` (the tag is after the last `/`) is pinned unless the tag is `latest`.
pinned(image) if {
	not contains(image, "@")
	parts := split(image, "/")
	name := parts[count(parts) - 1]
	pieces := split(name, ":")
	count(pieces) == 2
	pieces[1] != ""
	pieces[1] != "latest"
}

weak_namespace contains lib.finding(sprintf("baseline.namespace.%v", [worker_namespace]), sprintf("the worker namespace `%v` enforces Pod Security `%v`: tasks of every team run there, so it must be `restricted` (`baseline.pod_security.%v`)", [worker_namespace, level, worker_namespace])) if {
	is_object(controlplane)
	count(controlplane.worker_pools) > 0
	some ns in input.platform.baseline.namespaces
	ns.name == worker_namespace
	level := object.get(ns, "pod_security", null)
	level != "restricted"
}

deny contains v if {
	lib.production
	some v in weak_namespace
}

warn contains v if {
	not lib.production
	some v in weak_namespace
}
