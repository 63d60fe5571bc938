# The Stacksmith control plane Deployment (`input.platform.controlplane`, address
# `controlplane.deployment`): resource limits, a rate limit and an image pinned to a tag other than
# `latest` or to a digest everywhere; at least 2 replicas (and autoscaling minimum) in production,
# a warning elsewhere.
package stacksmith.controlplane

import rego.v1

import data.stacksmith.lib

minimum_replicas := 2

controlplane := input.platform.controlplane

deny contains lib.finding(controlplane.address, sprintf("no resource limit for %s (`controlplane.resources.limits.%s`)", [what, what])) if {
	is_object(controlplane)
	some what in ["cpu", "memory"]
	not limit_set(what)
}

limit_set(what) if {
	value := object.get(controlplane, ["resources", "limits", what], null)
	is_string(value)
	value != ""
}

deny contains lib.finding(controlplane.address, "no rate limit (`controlplane.rate_limit`)") if {
	is_object(controlplane)
	not is_object(controlplane.rate_limit)
}

deny contains lib.finding(controlplane.address, sprintf("image `%s` is not pinned: use a version tag other than `latest`, or a digest (`@sha256:...`)", [controlplane.image])) if {
	is_object(controlplane)
	not pinned(controlplane.image)
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

replica_violations contains lib.finding(controlplane.address, sprintf("runs %v replica(s), at least %v are required (`controlplane.replicas`)", [controlplane.replicas, minimum_replicas])) if {
	is_object(controlplane)
	controlplane.replicas < minimum_replicas
}

replica_violations contains lib.finding(controlplane.address, sprintf("autoscaling may scale down to %v replica(s), at least %v are required (`controlplane.autoscaling.min`)", [min, minimum_replicas])) if {
	is_object(controlplane)
	min := object.get(controlplane, ["autoscaling", "min"], minimum_replicas)
	min < minimum_replicas
}

deny contains v if {
	lib.production
	some v in replica_violations
}

warn contains v if {
	not lib.production
	some v in replica_violations
}

# The API's PriorityClass (`<stack>-controlplane`) has this value: a worker tier at or above it
# could preempt the API from its nodes.
api_priority := 1000000

deny contains lib.finding(sprintf("baseline.priority_class.%v", [name]), sprintf("worker tier `%v` has priority %v, at or above the API's %v: its pods could preempt the API (`baseline.priority_classes.%v`)", [name, value, api_priority, name])) if {
	is_object(controlplane)
	some name, value in object.get(input, ["stack", "config", "baseline", "priority_classes"], {})
	value >= api_priority
}
