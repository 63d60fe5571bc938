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

role := {"address": "iam.role.cluster_autoscaler", "type": "aws.iam.role", "action": "create", "after": {}}

group(scaling) := {"address": "cluster.node_group.workers", "type": "aws.eks.node_group", "action": "create", "after": {"scaling": scaling}}

production(resources) := {"stack": {"name": "s", "environment": "production"}, "resources": resources}

test_growing_node_group_without_autoscaler_is_denied_in_production if {
	denies := node_groups.deny with input as production([group({"min": 2, "desired": 2, "max": 10})])
	some d in denies
	d.address == "cluster.node_group.workers"
	contains(d.msg, "nothing adds nodes")
	contains(d.msg, "from 2 to 10")
}

test_growing_node_group_with_autoscaler_passes if {
	count(node_groups.deny) == 0 with input as production([group({"min": 2, "desired": 2, "max": 10}), role])
	count(node_groups.warn) == 0 with input as production([group({"min": 2, "desired": 2, "max": 10}), role])
}

test_fixed_node_group_needs_no_autoscaler if {
	count(node_groups.deny) == 0 with input as production([group({"min": 3, "desired": 3, "max": 3})])
}

test_growing_node_group_without_autoscaler_warns_elsewhere if {
	count(node_groups.deny) == 0 with input as plan({"min": 1, "desired": 1, "max": 3})
	some w in node_groups.warn with input as plan({"min": 1, "desired": 1, "max": 3})
	contains(w.msg, "Cluster Autoscaler")
}
