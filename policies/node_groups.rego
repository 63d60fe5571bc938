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
