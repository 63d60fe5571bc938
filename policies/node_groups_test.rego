package stacksmith.node_groups_test

import rego.v1

import data.stacksmith.node_groups

plan(scaling) := {
	"stack": {"name": "s", "environment": "staging"},
	"resources": [{"address": "cluster.node_group.workers", "type": "aws.eks.node_group", "action": "create", "after": {"scaling": scaling}}],
}

test_bounded_node_group_passes if {
	count(node_groups.deny) == 0 with input as plan({"min": 1, "desired": 2, "max": 100})
}

test_node_group_over_the_limit_is_denied if {
	denies := node_groups.deny with input as plan({"min": 1, "desired": 2, "max": 101})
	some d in denies
	d.address == "cluster.node_group.workers"
	contains(d.msg, "101 nodes")
}

test_node_group_without_maximum_is_denied if {
	denies := node_groups.deny with input as plan({"min": 1, "desired": 2})
	some d in denies
	contains(d.msg, "no maximum")
}
