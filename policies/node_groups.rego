# Node groups, everywhere: a maximum size is set and bounded, so a runaway autoscaler cannot buy
# an unbounded fleet.
package stacksmith.node_groups

import rego.v1

import data.stacksmith.lib

maximum_nodes := 100

deny contains lib.finding(r.address, "node group has no maximum size (`scaling.max`)") if {
	some r in lib.resources("aws.eks.node_group")
	not is_number(object.get(r.after, ["scaling", "max"], null))
}

deny contains lib.finding(r.address, msg) if {
	some r in lib.resources("aws.eks.node_group")
	max := object.get(r.after, ["scaling", "max"], null)
	is_number(max)
	max > maximum_nodes
	msg := sprintf("node group may grow to %v nodes, the limit is %v (`scaling.max`)", [max, maximum_nodes])
}

# A node group that may grow (`scaling.max` above `scaling.min`) needs something that adds its
# nodes: EKS does not scale managed node groups on its own, so without the Cluster Autoscaler
# (`cluster.autoscaler`, whose IAM role `iam.role.cluster_autoscaler` the plan then holds) pods
# that fit no node stay Pending and `max` is never used. Denied in production, a warning elsewhere
# (the `local` stack runs against emulators, which have no nodes to add).
autoscaler_role if {
	some r in input.resources
	r.address == "iam.role.cluster_autoscaler"
	r.action != "delete"
}

unscaled contains lib.finding(r.address, msg) if {
	some r in lib.resources("aws.eks.node_group")
	min := object.get(r.after, ["scaling", "min"], 0)
	max := object.get(r.after, ["scaling", "max"], 0)
	max > min
	not autoscaler_role
	msg := sprintf("node group may grow from %v to %v nodes, but nothing adds nodes: enable the Cluster Autoscaler (`cluster.autoscaler: { enabled: true }`), or set `scaling.max` to `scaling.min`", [min, max])
}

deny contains v if {
	lib.production
	some v in unscaled
}

warn contains v if {
	not lib.production
	some v in unscaled
}
