package stacksmith.tags_test

import rego.v1

import data.stacksmith.tags

all_tags := {"managed-by": "stacksmith", "team": "platform", "environment": "production", "cost-center": "1234", "Name": "x"}

plan(environment, resource_tags) := {
	"stack": {"name": "s", "environment": environment},
	"resources": [
		{"address": "network.vpc", "type": "aws.ec2.vpc", "action": "create", "after": {"tags": resource_tags}},
		{"address": "network.route.public_internet", "type": "aws.ec2.route", "action": "create", "after": {"destination_cidr_block": "0.0.0.0/0"}},
	],
}

test_production_with_every_tag_passes if {
	count(tags.deny) == 0 with input as plan("production", all_tags)
}

test_untaggable_resources_are_ignored if {
	denies := tags.deny with input as plan("production", object.remove(all_tags, ["team"]))
	every d in denies { d.address == "network.vpc" }
}

test_missing_team_is_denied_everywhere if {
	denies := tags.deny with input as plan("dev", object.remove(all_tags, ["team"]))
	some d in denies
	d.address == "network.vpc"
	contains(d.msg, "`team`")
}

test_empty_value_counts_as_missing if {
	denies := tags.deny with input as plan("production", object.union(all_tags, {"managed-by": " "}))
	some d in denies
	contains(d.msg, "`managed-by`")
}

test_cost_center_is_required_in_production_only if {
	without := object.remove(all_tags, ["cost-center"])
	denies := tags.deny with input as plan("production", without)
	some d in denies
	contains(d.msg, "`cost-center`")
	count(tags.deny) == 0 with input as plan("staging", object.union(without, {"environment": "staging"}))
}

test_deleted_resources_are_ignored if {
	deleted := {"stack": {"name": "s", "environment": "production"}, "resources": [{"address": "network.vpc", "type": "aws.ec2.vpc", "action": "delete", "before": {"tags": {}}, "after": null}]}
	count(tags.deny) == 0 with input as deleted
}
