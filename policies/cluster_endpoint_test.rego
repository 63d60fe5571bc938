package stacksmith.cluster_endpoint_test

import rego.v1

import data.stacksmith.cluster_endpoint

plan(environment, public, cidrs) := {
	"stack": {"name": "s", "environment": environment},
	"resources": [{"address": "cluster.control_plane", "type": "aws.eks.cluster", "action": "create", "after": {"endpoint_public_access": public, "endpoint_private_access": true, "public_access_cidrs": cidrs}}],
}

test_restricted_public_endpoint_passes if {
	count(cluster_endpoint.deny) == 0 with input as plan("production", true, ["203.0.113.0/24"])
}

test_private_only_endpoint_passes if {
	count(cluster_endpoint.deny) == 0 with input as plan("production", false, [])
}

test_endpoint_open_to_the_world_is_denied_in_production if {
	denies := cluster_endpoint.deny with input as plan("production", true, ["203.0.113.0/24", "0.0.0.0/0"])
	some d in denies
	d.address == "cluster.control_plane"
}

test_public_endpoint_without_cidrs_is_denied_in_production if {
	denies := cluster_endpoint.deny with input as plan("production", true, [])
	some d in denies
	contains(d.msg, "0.0.0.0/0")
}

test_open_endpoint_is_a_warning_elsewhere if {
	count(cluster_endpoint.deny) == 0 with input as plan("dev", true, [])
	warnings := cluster_endpoint.warn with input as plan("dev", true, [])
	count(warnings) == 1
}
